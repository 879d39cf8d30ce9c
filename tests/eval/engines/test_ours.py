"""mmpt.eval.engines.ours: the cached batched decoder against a naive uncached loop, stopping, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmpt.eval.engines import SamplingConfig
from mmpt.eval.engines.ours import Decoder, choose_next
from mmpt.model.tiny import tiny_model

# --- the decoding loop against a naive reference ----------------------------------------------

PREFIX_ID = 7  # stands for `<python>` in the id-level tests


def lively(model, seed: int = 0, scale: float = 0.4):
    """`model` with weights drawn wide: at the default init a tiny model ignores its context."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * scale)
    return model


def naive_greedy(model, prompt: list[int], prefix_lm: bool, steps: int) -> list[int]:
    """Greedy without cache, one prompt alone, the full forward each step with a hand-built mask."""
    seq = list(prompt)
    p = prompt.index(PREFIX_ID) + 1 if prefix_lm else 0
    for _ in range(steps):
        n = len(seq)
        allowed = [[k <= q or (q < p and k < p) for k in range(n)] for q in range(n)]
        mask = torch.tensor(allowed)[None, None]  # (1, 1, n, n)
        if model.config._attn_implementation == "eager":
            mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([seq]), position_ids=torch.arange(n)[None], attention_mask=mask, use_cache=False
            ).logits[0, -1]
        seq.append(int(logits.argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize(
    "arch, impl, prefix_lm, seed, scale",
    [
        ("gpt2", "sdpa", False, 0, 0.4),
        ("gpt2", "eager", True, 0, 0.4),
        ("llama", "sdpa", True, 0, 0.4),
        # GPT-Neo does not scale its attention scores; a draw where the prefix changes greedy tokens
        ("gpt_neo", "eager", True, 2, 1.0),
        ("mmpt_pangu", "sdpa", True, 1, 1.0),  # the top-query layer has a cache layer of its own
        ("mmpt_pangu", "eager", False, 0, 0.4),
    ],
)
def test_cached_batch_equals_naive_loop(arch: str, impl: str, prefix_lm: bool, seed: int, scale: float) -> None:
    model = lively(tiny_model(arch, impl), seed, scale)
    g = torch.Generator().manual_seed(0)
    prompts = []
    for n_nl, n_code in ((2, 1), (9, 0), (5, 3)):  # different lengths: the batch is left-padded
        nl = torch.randint(10, 96, (n_nl,), generator=g).tolist()
        code = torch.randint(10, 96, (n_code,), generator=g).tolist()
        prompts.append([1, *nl, PREFIX_ID, *code])
    prompts.append(prompts[1])  # a repeated prompt (n samples of one problem) is prefilled once
    steps = 8
    decoder = Decoder(
        model,
        SamplingConfig(greedy=True, max_new_tokens=steps),
        stop_id=-1,
        pad_id=0,
        prefix_id=PREFIX_ID if prefix_lm else None,
    )
    got = decoder(prompts)
    want = [naive_greedy(model, p, prefix_lm, steps) for p in prompts]
    assert got == want
    if prefix_lm:
        # the test can see the prefix: causal decoding of the same prompts differs somewhere
        assert want != [naive_greedy(model, p, False, steps) for p in prompts]


def test_decoder_stops_and_restricts() -> None:
    model = lively(tiny_model("gpt2", "sdpa"), 1)
    prompts = [[1, 20, PREFIX_ID, 30], [1, 21, 22, 23, PREFIX_ID, 31, 32]]
    sampling = SamplingConfig(greedy=False, max_new_tokens=8)

    def decode(stop_id: int, code_mask: torch.Tensor | None = None, ended=None) -> list[list[int]]:
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return Decoder(model, sampling, stop_id=stop_id, pad_id=0, code_mask=code_mask, ended=ended)(prompts, gens)

    free = decode(-1)
    assert [len(row) for row in free] == [8, 8]
    # stopping at a later token of row 0 ends each row at its first stop, which is dropped
    k = next(k for k in range(1, 8) if free[0][k] not in free[0][:k])
    stopped = decode(free[0][k])
    assert stopped[0] == free[0][:k]
    assert stopped[1] == (free[1][: free[1].index(free[0][k])] if free[0][k] in free[1] else free[1])
    # a code mask forbidding what was drawn forces other tokens, all inside the mask
    code_mask = torch.ones(96, dtype=torch.bool)
    code_mask[[t for row in free for t in row]] = False
    code_mask[90:] = False
    restricted = decode(-1, code_mask)
    assert all(code_mask[t] for row in restricted for t in row) and [len(row) for row in restricted] == [8, 8]
    # `ended` (the end of the function) ends a row after the token that ended it, keeping the token
    assert decode(-1, ended=lambda prompt, gen: len(gen) == 3 + len(prompt) % 2) == [free[0][:3], free[1][:4]]


# --- sampling ---------------------------------------------------------------------------------


def nucleus_reference(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """The nucleus distribution, written out: smallest prefix of the sorted probs with mass >= top_p."""
    z = logits / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep, mass = [], 0.0
    for i in order:
        keep.append(i)
        mass += p[i]
        if mass >= top_p:
            break
    q = np.zeros_like(p)
    q[keep] = p[keep]
    return q / q.sum()


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8), (1.5, 0.5)])
def test_choose_next_samples_the_nucleus(temperature: float, top_p: float) -> None:
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -1.0, float("-inf")])
    draws = 20000
    gens = [torch.Generator().manual_seed(i) for i in range(draws)]
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
    picks = choose_next(logits.expand(draws, -1), SamplingConfig(False, temperature, top_p), u)
    freq = np.bincount(picks.numpy(), minlength=6) / draws
    want = nucleus_reference(logits.numpy().astype(np.float64), temperature, top_p)
    assert np.abs(freq - want).max() < 0.015
    assert freq[want == 0].sum() == 0  # outside the nucleus (and -inf) never drawn


def test_sampling_does_not_depend_on_batching() -> None:
    model = lively(tiny_model("llama", "sdpa"), 2)
    prompts = [[1, 11, 12, PREFIX_ID, 13], [1, 14, PREFIX_ID, 15, 16, 17, 18, 19], [1, PREFIX_ID, 20, 21]]
    sampling = SamplingConfig(greedy=False, temperature=1.0, top_p=0.95, max_new_tokens=10)
    decoder = Decoder(model, sampling, stop_id=-1, pad_id=0, prefix_id=PREFIX_ID)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    prompts.append(prompts[1])  # shares its prompt's prefill, draws from its own generator
    together = decoder(prompts, gens([5, 6, 7, 9]))
    alone = [decoder([p], gens([s]))[0] for p, s in zip(prompts, [5, 6, 7, 9])]
    assert together == alone
    assert together[1] != together[3]
    assert decoder(prompts, gens([5, 6, 8, 9]))[2] != together[2]  # the seed does matter
