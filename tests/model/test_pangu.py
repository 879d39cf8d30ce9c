"""PanGu-α against independent references: transformers' GPT-2 for the backbone, a hand-written top layer."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from mmpt.model.pangu import MODEL_TYPE, PanguConfig, PanguForCausalLM
from mmpt.model.tiny import tiny_model

VOCAB = 96


def lively(model, seed: int = 0, scale: float = 0.3):
    """Weights drawn wide (the default init makes the top layer nearly the identity: a weak test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight")) else 0))
    return model


def gpt2_with_same_backbone(model: PanguForCausalLM) -> GPT2LMHeadModel:
    """transformers' GPT-2 LM holding PanGu's backbone weights (its head is the tied token embedding)."""
    config = GPT2Config(**{k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")})
    gpt2 = GPT2LMHeadModel(config).eval()
    missing, unexpected = gpt2.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k.startswith("transformer.")}, strict=False
    )
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    return gpt2


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def top_layer_by_hand(sd: dict, h: torch.Tensor, positions: torch.Tensor, heads: int, eps: float) -> torch.Tensor:
    """Logits (T, V) of one sequence from backbone output h (T, d), written from the architecture's definition."""
    t, d = h.shape
    hd = d // heads
    p = "top_query_layer."
    x = layer_norm(h, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps)
    kv = x @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]  # Conv1D: (in, out) weights
    k, v = kv[:, :d], kv[:, d:]
    q = sd["top_query_embedding.weight"][positions] @ sd[p + "attn.q_attn.weight"] + sd[p + "attn.q_attn.bias"]
    out = torch.zeros(t, d)
    for head in range(heads):
        cols = slice(head * hd, (head + 1) * hd)
        for i in range(t):
            scores = torch.stack([q[i, cols] @ k[j, cols] / math.sqrt(hd) for j in range(i + 1)])
            out[i, cols] = torch.softmax(scores, 0) @ v[: i + 1, cols]
    a = h + out @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
    y = layer_norm(a, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps)
    y = (
        gelu_new(y @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]) @ sd[p + "mlp.c_proj.weight"]
        + sd[p + "mlp.c_proj.bias"]
    )
    return (a + y) @ sd["transformer.wte.weight"].T


def gpt2_init_std(name: str, config) -> float | None:
    """GPT-2's init of a weight, by name: N(0, range), residual projections N(0, range/√(2·n_layer)),
    None for LayerNorm weights (ones) and biases (zeros)."""
    if name.endswith(".bias") or ".ln_" in name:
        return None
    scaled = name.endswith("c_proj.weight")
    return config.initializer_range / (2 * config.n_layer) ** 0.5 if scaled else config.initializer_range


@pytest.mark.parametrize("build", ["constructor", "_from_config"])
def test_fresh_weights_are_drawn_as_gpt2_draws_its_own(build):
    """The top layer's residual projections too: transformers' init never visits a module without
    parameters of its own in a class outside its package, so a rule on the attention block is skipped."""
    config = PanguConfig(vocab_size=VOCAB, n_embd=128, n_layer=4, n_head=4, n_positions=128)
    torch.manual_seed(0)
    model = PanguForCausalLM(config) if build == "constructor" else PanguForCausalLM._from_config(config)
    reference = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in config.to_dict().items() if k != "model_type"}))
    for m in (reference, model):  # the rule holds for transformers' GPT-2 itself, then for ours
        for name, p in m.named_parameters():
            std = gpt2_init_std(name, config)
            if std is None:  # LayerNorm weights are ones, biases zeros
                assert torch.all(p == (1.0 if name.endswith(".weight") else 0.0)), name
            else:
                assert abs(p.std().item() / std - 1) < 0.1 and abs(p.mean().item()) < std / 10, (name, p.std().item(), std)


def within_fp32(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to fp32 rounding in different operation orders (sdpa vs a hand-written attention):
    1e-5 absolute, or 2e-6 of the largest logit where the logits are larger than 5."""
    return (got - want).abs().max().item() <= max(1e-5, 2e-6 * want.abs().max().item())


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logits_equal_gpt2_backbone_plus_hand_written_top_layer(impl):
    model = lively(tiny_model(MODEL_TYPE, impl, vocab=VOCAB))
    ids = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(1))
    gpt2 = gpt2_with_same_backbone(model)
    with torch.no_grad():
        got = model(input_ids=ids).logits[0]
        h = gpt2.transformer(input_ids=ids).last_hidden_state[0]  # (T, d) after ln_f
        want = top_layer_by_hand(model.state_dict(), h, torch.arange(9), model.config.n_head, model.config.layer_norm_epsilon)
        plain = gpt2(input_ids=ids).logits[0]
    assert within_fp32(got, want)
    assert (got - plain).abs().max().item() > 1e-2  # the top layer matters: GPT-2 alone is another model


def test_with_the_top_layer_zeroed_it_is_gpt2():
    model = lively(tiny_model(MODEL_TYPE, "eager", vocab=VOCAB))
    with torch.no_grad():  # both residual branches of the top layer output zero: the layer is the identity
        for name in ("attn.c_proj", "mlp.c_proj"):
            module = model.top_query_layer.get_submodule(name)
            module.weight.zero_()
            module.bias.zero_()
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(input_ids=ids).logits
        want = gpt2_with_same_backbone(model)(input_ids=ids).logits
    assert within_fp32(got, want)


def test_query_embedding_is_indexed_by_position_ids():
    """Packed rows restart positions per instance; the query embedding must follow (not the row index)."""
    model = lively(tiny_model(MODEL_TYPE, "eager", vocab=VOCAB))
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = model(input_ids=ids).logits
        model.top_query_embedding.weight[5].add_(1.0)  # only position 5 changes
        moved = model(input_ids=ids).logits
    assert (moved[0, :5] - base[0, :5]).abs().max() == 0 and (moved[0, 5] - base[0, 5]).abs().max() > 1e-3


def test_kv_cache_steps_equal_the_full_forward():
    model = lively(tiny_model(MODEL_TYPE, "sdpa", vocab=VOCAB))
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        out = model(input_ids=ids[:, :6], use_cache=True)
        steps = [out.logits[:, -1]]
        for t in range(6, 10):
            out = model(input_ids=ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits[:, -1])
    assert len(out.cache.layers) == model.cache_layers == model.config.n_layer + 1
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:], atol=1e-5, rtol=1e-5)
    # transformers' own generate (its cache is built from the config's n_layer layers) works too
    greedy = model.generate(ids[:, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
    seq = ids[:, :6]
    with torch.no_grad():
        for _ in range(4):
            seq = torch.cat([seq, model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, seq)


def test_saved_and_loaded_through_the_auto_classes(tmp_path):
    model = lively(tiny_model(MODEL_TYPE, "eager", vocab=VOCAB))
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == MODEL_TYPE
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert isinstance(loaded, PanguForCausalLM) and loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = torch.arange(8)[None]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize(
    "module",
    [
        "mmpt.train",
        "mmpt.export",
        "mmpt.eval.generate",
        "mmpt.eval.score",
        "mmpt.eval.engines.ours",
        "mmpt.doctor",
        "mmpt.import_checkpoint",
    ],
)
def test_every_loading_module_registers_the_model_type(module):
    """A fresh interpreter that imports only `module` can build the model type (no other import does it)."""
    code = f"import {module}; from transformers import AutoConfig; AutoConfig.for_model({MODEL_TYPE!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
