"""Packed rows are exact: logits of each instance in a row equal the instance run alone."""

from __future__ import annotations

import pytest
import torch

from mmpt.model.attention import (
    CPU_FLEX_MULTIPLE,
    FLEX,
    SUPPORTED,
    attention_path,
    block_mask,
    check_supported,
    mask_from_allowed,
    packed_allowed,
    packed_forward,
    packed_mask,
    pad_rows,
)
from mmpt.model.tiny import TINY_CONFIGS, tiny_model

VOCAB = 96
COMBOS = [(arch, impl) for arch in TINY_CONFIGS for impl in SUPPORTED[arch]]
LENGTHS = [6, 9, 7]  # instances of one row; GPT-Neo's local window (4) is shorter than each
PADS = 2
TOL = 1e-5


def _row(seed: int = 0, lengths=LENGTHS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, position_ids, prefix) of one packed row with tail pads; prefix = first 3 tokens."""
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths) + PADS
    ids = torch.randint(0, VOCAB, (1, n), generator=g)
    pos = torch.cat([torch.arange(k) for k in lengths] + [torch.zeros(PADS, dtype=torch.long)])[None]
    prefix = torch.cat([torch.arange(k) < 3 for k in lengths] + [torch.zeros(PADS, dtype=torch.bool)])[None]
    return ids, pos, prefix


def _hand_built(lengths, prefix: torch.Tensor) -> torch.Tensor:
    """(1, n, n) bool, written out element by element from the definition (independent of packed_allowed)."""
    n = prefix.shape[1]
    allowed = torch.zeros(1, n, n, dtype=torch.bool)
    spans, start = [], 0
    for k in list(lengths) + [1] * (n - sum(lengths)):
        spans.append(range(start, start + k))
        start += k
    for span in spans:
        for q in span:
            for k in span:
                allowed[0, q, k] = k <= q or (bool(prefix[0, q]) and bool(prefix[0, k]))
    return allowed


@pytest.mark.parametrize("arch,impl", COMBOS)
def test_packed_row_equals_each_instance_alone(arch, impl):
    model = tiny_model(arch, impl)
    ids, pos, _ = _row()
    with torch.no_grad():
        packed = packed_forward(model, {"input_ids": ids, "position_ids": pos})[0]
        assert not torch.isnan(packed).any()  # pads attend to themselves: no empty softmax rows
        start = 0
        for k in LENGTHS:
            alone = model(input_ids=ids[:, start : start + k]).logits[0]  # stock model, its own causal mask
            assert (packed[start : start + k] - alone).abs().max().item() <= TOL
            start += k


@pytest.mark.parametrize("arch,impl", COMBOS)
def test_prefix_row_equals_hand_built_dense_mask(arch, impl):
    model = tiny_model(arch, impl)
    ids, pos, prefix = _row(seed=1)
    with torch.no_grad():
        packed = packed_forward(model, {"input_ids": ids, "position_ids": pos, "prefix": prefix})[0]
        dense = mask_from_allowed(_hand_built(LENGTHS, prefix), impl)
        ref = model(input_ids=ids, position_ids=pos, attention_mask=dense).logits[0]
        assert (packed - ref).abs().max().item() <= TOL
        # and each instance alone under its own hand-built mask
        start = 0
        for k in LENGTHS:
            one = _hand_built([k], prefix[:, start : start + k])
            alone = model(input_ids=ids[:, start : start + k], attention_mask=mask_from_allowed(one, impl)).logits[0]
            assert (packed[start : start + k] - alone).abs().max().item() <= TOL
            start += k


@pytest.mark.parametrize("arch,impl", COMBOS)
def test_prefix_is_bidirectional_and_code_stays_causal(arch, impl):
    """Semantics checked without any mask: perturb one token and see which outputs move."""
    model = tiny_model(arch, impl)
    k = 8
    ids = torch.randint(0, VOCAB, (1, k), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "position_ids": torch.arange(k)[None], "prefix": (torch.arange(k) < 4)[None]}
    with torch.no_grad():
        base = packed_forward(model, batch)[0]
        later_prefix = dict(batch, input_ids=ids.clone())
        later_prefix["input_ids"][0, 3] = (ids[0, 3] + 1) % VOCAB
        moved = packed_forward(model, later_prefix)[0]
        assert (moved[0] - base[0]).abs().max() > 1e-4  # token 0 sees prefix token 3
        code = dict(batch, input_ids=ids.clone())
        code["input_ids"][0, 6] = (ids[0, 6] + 1) % VOCAB
        moved = packed_forward(model, code)[0]
        assert (moved[:6] - base[:6]).abs().max() <= TOL  # nothing before code token 6 sees it
        assert (moved[6] - base[6]).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_position_ids_alone_leak_across_instances(arch):
    """Why the explicit mask exists: without it a later instance attends to an earlier one."""
    model = tiny_model(arch, "sdpa")
    ids, pos, _ = _row()
    with torch.no_grad():
        leaky = model(input_ids=ids, position_ids=pos).logits[0, LENGTHS[0] : sum(LENGTHS[:2])]
        alone = model(input_ids=ids[:, LENGTHS[0] : sum(LENGTHS[:2])]).logits[0]
    assert (leaky - alone).abs().max().item() > 1e-3


def test_eager_needs_the_additive_form():
    """A boolean mask is added as 1/0 by eager attention (masks nothing); the float form is exact."""
    model = tiny_model("llama", "eager")
    ids, pos, _ = _row()
    with torch.no_grad():
        as_bool = model(input_ids=ids, position_ids=pos, attention_mask=packed_mask(pos, None, "sdpa")).logits
        as_float = model(input_ids=ids, position_ids=pos, attention_mask=packed_mask(pos, None, "eager")).logits
        alone = model(input_ids=ids[:, LENGTHS[0] : sum(LENGTHS[:2])]).logits
    second = slice(LENGTHS[0], sum(LENGTHS[:2]))
    assert (as_bool[:, second] - alone).abs().max().item() > 1e-3
    assert (as_float[:, second] - alone).abs().max().item() <= TOL


def test_packed_allowed_matches_hand_built():
    _, pos, prefix = _row()
    assert torch.equal(packed_allowed(pos, prefix), _hand_built(LENGTHS, prefix))
    assert torch.equal(packed_allowed(pos), _hand_built(LENGTHS, torch.zeros_like(prefix)))


def test_mask_from_allowed_forms():
    allowed = torch.tensor([[[True, False], [True, True]]])  # (1, 2, 2)
    sdpa = mask_from_allowed(allowed, "sdpa")
    assert sdpa.dtype == torch.bool and sdpa.shape == (1, 1, 2, 2) and torch.equal(sdpa[0, 0], allowed[0])
    eager = mask_from_allowed(allowed[:, None], "eager", torch.float16)  # (B, 1, Q, K) input works too
    assert eager.dtype == torch.float16 and eager.shape == (1, 1, 2, 2)
    assert eager[0, 0, 0, 1] == torch.finfo(torch.float16).min and eager[0, 0, 1].eq(0).all()
    with pytest.raises(ValueError, match="bool"):
        mask_from_allowed(allowed.float(), "sdpa")
    with pytest.raises(ValueError, match="flash_attention_2"):
        mask_from_allowed(allowed, "flash_attention_2")


@pytest.mark.parametrize(
    "model_type,impl,why",
    [
        ("gpt_neo", "sdpa", "no sdpa"),
        ("gpt2", "flex_attention", "no flex_attention"),
        ("gpt2", "flash_attention_2", "4-D mask"),
        ("mamba", "eager", "not been verified"),
    ],
)
def test_unverified_combinations_are_refused(model_type, impl, why):
    with pytest.raises(ValueError, match=why) as e:
        check_supported(model_type, impl)
    assert f"{impl!r} for model type {model_type!r}" in str(e.value) and "gpt_neo: eager" in str(e.value)


def test_packed_forward_refuses_before_running():
    model = tiny_model("gpt2", "eager")
    model.config.model_type = "not_verified"  # the check reads the config, as for any stock model
    ids, pos, _ = _row()
    with pytest.raises(ValueError, match="not_verified"):
        packed_forward(model, {"input_ids": ids, "position_ids": pos})


def test_every_supported_model_type_is_verified_here():
    assert set(SUPPORTED) == set(TINY_CONFIGS)  # COMBOS covers the whole table


@pytest.mark.parametrize("arch,impl", [("gpt2", "eager"), ("llama", "sdpa"), ("llama", "eager")])
def test_mask_from_allowed_serves_left_padded_kv_cached_decoding(arch, impl):
    """The generation-side use: a (B, 1, Q, K) mask for a left-padded prefill, then one cached step."""
    model = tiny_model(arch, impl)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(5, VOCAB, (n,), generator=g) for n in (5, 8)]
    nxt = torch.randint(5, VOCAB, (2, 1), generator=g)
    pad = 8 - 5
    ids = torch.stack([torch.cat([torch.zeros(pad, dtype=torch.long), prompts[0]]), prompts[1]])  # (2, 8)
    real = torch.ones(2, 8, dtype=torch.bool)
    real[0, :pad] = False
    pos = (real.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    allowed = causal & real[:, None, :] | torch.eye(8, dtype=torch.bool)  # (2, 8, 8); a pad sees itself only
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=pos, attention_mask=mask_from_allowed(allowed, impl), use_cache=True)
        step_allowed = torch.cat([real, torch.ones(2, 1, dtype=torch.bool)], dim=1)[:, None, None, :]  # (2, 1, 1, 9)
        step = model(
            input_ids=nxt,
            position_ids=pos[:, -1:] + 1,
            cache=out.past_key_values,
            attention_mask=mask_from_allowed(step_allowed, impl),
            use_cache=True,
        ).logits[:, -1]
        for b, prompt in enumerate(prompts):
            alone = model(input_ids=torch.cat([prompt, nxt[b]])[None]).logits[0, -1]
            assert (step[b] - alone).abs().max().item() <= TOL


def test_block_mask_is_the_packed_rule_and_skips_other_instances():
    _, pos, prefix = _row()
    n = pos.shape[1]
    bm = block_mask(pos, prefix)
    b, q, k = torch.arange(1)[:, None, None], torch.arange(n)[None, :, None], torch.arange(n)[None, None, :]
    assert torch.equal(bm.mask_mod(b, 0, q, k), _hand_built(LENGTHS, prefix))
    # two instances of 256 tokens: the 128x128 blocks of the other instance are never visited
    pos2 = torch.cat([torch.arange(256), torch.arange(256)])[None]
    visited = block_mask(pos2).to_dense()[0, 0]  # (4, 4) blocks: 1 = computed
    assert visited.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize("arch", FLEX)
def test_flex_forward_equals_the_dense_mask_path(arch):
    """The GPU path (flex_attention + BlockMask) against the dense-mask reference, forward on CPU."""
    flex = tiny_model(arch, "flex_attention")
    dense = tiny_model(arch, "eager")
    ids, pos, prefix = _row()
    for p in (None, prefix):
        batch = {"input_ids": ids, "position_ids": pos} | ({} if p is None else {"prefix": p})
        with torch.no_grad():
            diff = (packed_forward(flex, batch) - packed_forward(dense, batch)).abs().max().item()
        assert diff <= TOL, (arch, p is not None, diff)
    assert attention_path(arch, "flex_attention").startswith("flex_attention + BlockMask")


@pytest.mark.parametrize("head_dim", [8, 16])
def test_cpu_flex_kernel_is_exact_on_rows_padded_for_it(head_dim):
    """torch's compiled CPU flex, alone: on AVX2 with a head dim of 8 or 16 a kv block of 8 mod 16 keys
    (the 24-token row) reads the 8 key rows past its end. Those rows are NaN here (K is a view into a
    longer buffer), so any such read shows; the row as `packed_forward` pads it reads none."""
    from torch.nn.attention.flex_attention import flex_attention

    _, pos, prefix = _row()
    n = pos.shape[1]
    ids_p, pos_p, prefix_p = pad_rows(torch.zeros_like(pos), pos, prefix, CPU_FLEX_MULTIPLE)
    m = pos_p.shape[1]
    assert torch.equal(pos_p[:, :n], pos) and torch.equal(prefix_p[:, :n], prefix)  # pads: own instances, no prefix
    assert not pos_p[:, n:].any() and not prefix_p[:, n:].any() and not ids_p.any()
    g = torch.Generator().manual_seed(0)
    q, v = (torch.randn(1, 2, m, head_dim, generator=g) for _ in range(2))
    k_buffer = torch.full((1, 2, m + CPU_FLEX_MULTIPLE, head_dim), float("nan"))
    k_buffer[:, :, :m] = torch.randn(1, 2, m, head_dim, generator=g)
    k = k_buffer[:, :, :m]
    out = torch.compile(flex_attention, dynamic=False)(q, k, v, block_mask=block_mask(pos_p, prefix_p))
    allowed = packed_allowed(pos, prefix)[:, None]  # (1, 1, n, n): the first n tokens never see a pad
    ref = torch.nn.functional.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], attn_mask=allowed)
    assert (out[:, :, :n] - ref).abs().max().item() <= TOL


def test_flex_training_on_cpu_is_refused_with_a_reason():
    ids, pos, _ = _row()
    with pytest.raises(ValueError, match="no backward on CPU"):
        packed_forward(tiny_model("llama", "flex_attention"), {"input_ids": ids, "position_ids": pos})


def _packed_rows(lengths_per_row: list[list[int]], n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(position_ids, prefix) (B, n) of rows packed with instances of the given lengths and tail pads;
    each instance's prefix is a random run from its start (at least one token, as up to `<python>`)."""
    g = torch.Generator().manual_seed(seed)
    pos, prefix = torch.zeros(len(lengths_per_row), n, dtype=torch.long), torch.zeros(len(lengths_per_row), n, dtype=torch.bool)
    for r, lengths in enumerate(lengths_per_row):
        start = 0
        for k in lengths:
            pos[r, start : start + k] = torch.arange(k)
            prefix[r, start : start + int(torch.randint(1, k + 1, (1,), generator=g))] = True
            start += k
    return pos, prefix


def _blocks(count: torch.Tensor, indices: torch.Tensor, kv_blocks: int) -> torch.Tensor:
    """(B, H, QB, KB) bool block map of a BlockMask's (count, indices) pair."""
    dense = torch.zeros(*count.shape, kv_blocks, dtype=torch.bool)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in count.shape)):
        i = tuple(idx.tolist())
        dense[i][indices[i][: count[i]].long()] = True
    return dense


@pytest.mark.parametrize("n", [1000, 1024])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_block_mask_equals_the_dense_rule_block_for_block(n, with_prefix):
    """Ours (from instance boundaries) against torch's `create_block_mask` over the dense rule: the
    same full and partial blocks (forward and transposed), and full + partial-with-mask_mod is
    `packed_allowed` element for element."""
    from torch.nn.attention.flex_attention import create_block_mask

    rows = [[300, 5, 1, 400, 200], [129, 127, 256, 3], [n], [40] * 20]  # long instances give full blocks
    pos, prefix = _packed_rows([[k for k in r if k] for r in rows], n)
    prefix = prefix if with_prefix else None
    ours = block_mask(pos, prefix)
    allowed = packed_allowed(pos, prefix)  # (B, N, N): the dense reference rule
    ref = create_block_mask(lambda b, h, q, k: allowed[b, q, k], len(rows), None, n, n)
    kb = -(-n // 128)
    for attr in ("kv", "full_kv", "q", "full_q"):
        got = _blocks(getattr(ours, f"{attr}_num_blocks"), getattr(ours, f"{attr}_indices"), kb)
        want = _blocks(getattr(ref, f"{attr}_num_blocks"), getattr(ref, f"{attr}_indices"), kb)
        if attr.startswith("full"):  # torch calls the sequence's ragged last block full when it is; we leave it partial
            partial_ref = _blocks(getattr(ref, f"{attr[5:]}_num_blocks"), getattr(ref, f"{attr[5:]}_indices"), kb)
            edge = torch.zeros(kb, kb, dtype=torch.bool)
            edge[-1, :], edge[:, -1] = n % 128 != 0, n % 128 != 0
            assert torch.equal(got, want & ~edge), attr
            assert torch.equal(
                got | _blocks(getattr(ours, f"{attr[5:]}_num_blocks"), getattr(ours, f"{attr[5:]}_indices"), kb),
                want | partial_ref,
            ), attr
        elif n % 128 == 0:
            assert torch.equal(got, want), attr
    assert ours.seq_lengths == (n, n) and ours.BLOCK_SIZE == (128, 128)
    # element by element: a full block allows everything, a partial one what its mask_mod says
    full = _blocks(ours.full_kv_num_blocks, ours.full_kv_indices, kb)[:, 0]
    part = _blocks(ours.kv_num_blocks, ours.kv_indices, kb)[:, 0]
    up = lambda x: x.repeat_interleave(128, 1).repeat_interleave(128, 2)[:, :n, :n]  # noqa: E731
    b, q, k = torch.arange(len(rows))[:, None, None], torch.arange(n)[None, :, None], torch.arange(n)[None, None, :]
    got = up(full) | (up(part) & ours.mask_mod(b, 0, q, k))
    assert torch.equal(got, allowed)
    assert full.any() and part.any() and not (full & part).any()


def test_block_mask_refuses_a_prefix_that_is_not_a_run_from_the_instance_start():
    pos = torch.arange(10)[None]
    prefix = torch.zeros(1, 10, dtype=torch.bool)
    prefix[0, 3:5] = True
    with pytest.raises(RuntimeError, match="prefix must be a run"):
        block_mask(pos, prefix)


def test_block_mask_refuses_positions_that_skip():
    with pytest.raises(RuntimeError, match="count up by 1"):
        block_mask(torch.tensor([[0, 1, 3, 4, 0, 1]]))


def test_rows_longer_than_the_sliding_window_are_refused():
    """StarCoder2's sliding window is replaced by the packed mask: exact only while rows fit in it."""
    from transformers import AutoConfig

    from mmpt.model.attention import check_window

    config = AutoConfig.for_model("starcoder2", sliding_window=4096, vocab_size=64, bos_token_id=0, eos_token_id=0)
    check_window(config, 4096)  # a row of the window's length: every instance fits
    with pytest.raises(
        ValueError,
        match=r"max_seq_length 4097 is longer than the sliding window of 'starcoder2' \(4096 tokens\).*--max-seq-length 4096",
    ):
        check_window(config, 4097)
    check_window(AutoConfig.for_model("qwen2"), 32768)  # no window unless use_sliding_window
