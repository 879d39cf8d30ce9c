"""Attention masks for packed rows, handed to stock `transformers` models as a 4-D mask.

A packed row holds several instances; each must see only itself. Position ids restart at 0 for
every instance (and each tail pad is an instance of its own at position 0), so the instance of a
token is the running count of zeros in `position_ids`. From that, per token:

    allowed[b, q, k] = same_instance(q, k) and (k <= q or (prefix[q] and prefix[k]))

`prefix` marks the NL prefix of prefix-code-clm (bidirectional within the instance). Position ids
alone do not isolate instances in transformers 5.x (its packed-sequence detection only runs when no
mask is given and leaks for several models), so `packed_forward` always passes an explicit 4-D
mask, which `transformers.masking_utils` hands to the attention function unchanged. Each attention
function reads that mask in its own form (sdpa: boolean, True = attend; eager: additive float), and
only the (model_type, implementation) pairs in `SUPPORTED` were verified exact against running each
instance alone (tests/model/test_attention.py); anything else is refused, never run approximately.

The mask is built on the fly from (B, N) per-token data: nothing quadratic is stored in the data
path. Its memory is B·N² bools (sdpa) or floats (eager), e.g. 32 MiB for 32 rows of 1024 with sdpa.

The GPU path: a dense mask keeps sdpa off its flash kernel and computes every (q, k) pair of the
row. With `attn_implementation="flex_attention"` (model types in `FLEX`) `packed_forward` passes
a `torch.nn.attention.flex_attention.BlockMask` instead, built from the instance boundaries and the
prefix lengths in O(B·N) (`block_mask`; the same rule as a `mask_mod` over (B, N) instance ids and
prefix flags for the partial blocks); transformers hands a 4-D BlockMask to its flex attention
unchanged, and the kernel skips every block of the row that no query may see (other instances).
The trainer pads every batch to one shape under flex (a new shape would recompile it).
The dense-mask paths stay the reference: flex is verified against them numerically (forward on
CPU, where torch has no flex backward; tests/model/test_attention.py); on CPU the rows are padded to
a multiple of 16 tokens for torch's CPU kernel (`CPU_FLEX_MULTIPLE`), the logits cut back to N. `attention_path` names the
path a model gets, for `mmpt doctor` and the GPU bench.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Verified exact on transformers 5.24 / torch 2.13 (CPU, fp32, max abs diff <= 1e-5 vs alone and vs
# a hand-built dense mask, all four objectives): see tests/model/test_attention.py.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "gpt2": ("eager", "sdpa"),
    "gpt_neo": ("eager",),  # PyCodeGPT's architecture; transformers has no sdpa for GPT-Neo
    "llama": ("eager", "sdpa"),  # stands for the Llama/Qwen2/Mistral family
    "qwen2": ("eager", "sdpa"),
    "codegen": ("eager", "sdpa"),
    "mmpt_pangu": ("eager", "sdpa"),  # PanGu-α (mmpt/model/pangu.py): its top-query layer gets the same mask
    "starcoder2": ("eager", "sdpa"),  # its sliding window is replaced by the packed mask: `check_window`
}
# Model types whose flex_attention (BlockMask) forward equals the dense-mask path (max abs diff
# <= 1e-5, CPU fp32, transformers 5.24 / torch 2.13). gpt2, gpt_neo and mmpt_pangu have no flex implementation.
FLEX: tuple[str, ...] = ("llama", "qwen2", "codegen", "starcoder2")

# Why an implementation is refused for every model; shown in the error.
_REFUSED_IMPLEMENTATIONS = {
    "flex_attention": f"transformers has no flex_attention for this model type (verified: {', '.join(FLEX)})",
    "flash_attention_2": "it takes no 4-D mask (it un-pads by a 2-D mask or cu_seqlens), so it cannot express "
    "the bidirectional NL prefix, and it cannot be verified on CPU",
    "flash_attention_3": "same as flash_attention_2",
}
_REFUSED_PAIRS = {("gpt_neo", "sdpa"): "transformers has no sdpa implementation of GPT-Neo"}


def _supported_text() -> str:
    return "; ".join(f"{m}: {', '.join(impls)}" for m, impls in SUPPORTED.items()) + f"; flex_attention: {', '.join(FLEX)}"


def check_supported(model_type: str, impl: str) -> None:
    """Raise a ValueError naming the combination and the verified ones unless it is in `SUPPORTED`."""
    if impl in SUPPORTED.get(model_type, ()) or (impl == "flex_attention" and model_type in FLEX):
        return
    if model_type not in SUPPORTED:
        why = f"model type {model_type!r} has not been verified for packed rows"
    elif (model_type, impl) in _REFUSED_PAIRS:
        why = _REFUSED_PAIRS[model_type, impl]
    elif impl in _REFUSED_IMPLEMENTATIONS:
        why = _REFUSED_IMPLEMENTATIONS[impl]
    else:
        why = f"{model_type!r} with {impl!r} was not verified exact for packed rows"
    raise ValueError(
        f"attention implementation {impl!r} for model type {model_type!r} is refused: {why}. "
        f"Verified combinations: {_supported_text()}. Pick one with `attn_implementation=...` when loading the model."
    )


def check_window(hf_config, max_seq_length: int | None) -> None:
    """Raise a ValueError when rows may be longer than the model's sliding window (StarCoder2: 4096).

    The packed 4-D mask (and the BlockMask) replaces the model's own mask, sliding window included:
    within an instance every earlier token is visible. That equals the model's attention only while
    no instance is longer than the window, which rows of at most `sliding_window` tokens guarantee.
    """
    window = getattr(hf_config, "sliding_window", None)  # None where the model (or Qwen2's setting) has none
    if window and max_seq_length and max_seq_length > window:
        raise ValueError(
            f"max_seq_length {max_seq_length} is longer than the sliding window of {hf_config.model_type!r} "
            f"({window} tokens): packed rows attend to the whole instance, so attention past the window would "
            f"differ from the model's; prepare the data with --max-seq-length {window} or less"
        )


def instance_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, N) long: the index of each token's instance within its row (a new one at each position 0)."""
    return (position_ids == 0).long().cumsum(dim=-1)


def packed_allowed(position_ids: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, N) bool: may query q attend to key k (causal within an instance, prefix bidirectional)."""
    if position_ids.dim() != 2:
        raise ValueError(f"position_ids must be (B, N), got shape {tuple(position_ids.shape)}")
    n = position_ids.shape[1]
    seg = instance_ids(position_ids)  # (B, N)
    same = seg[:, :, None] == seg[:, None, :]  # (B, N, N)
    causal = torch.ones(n, n, dtype=torch.bool, device=position_ids.device).tril()  # (N, N)
    if prefix is None:
        return same & causal
    if prefix.shape != position_ids.shape:
        raise ValueError(f"prefix has shape {tuple(prefix.shape)}, position_ids {tuple(position_ids.shape)}")
    prefix = prefix.bool()
    both_prefix = prefix[:, :, None] & prefix[:, None, :]  # (B, N, N)
    return same & (causal | both_prefix)


BLOCK = 128  # flex_attention's default block: BlockMask tiles are BLOCK x BLOCK
# On CPU, rows under flex are padded to a multiple of this (`pad_rows`). torch's compiled CPU flex
# (Inductor's C++ template, torch 2.13) computes q·kᵀ of each kv block (min(BLOCK, N) keys) in steps of
# 16 keys; for a tail of 8 keys with a head dim of 8 or 16 on AVX2 (8 floats a vector) it takes a path
# that loads 16 key rows and stores 16 scores: it reads past the last key and overwrites the running
# row maxima, so the output is NaN or off by O(1), depending on what memory lies there (the tiny test
# models have head dim 8; test_cpu_flex_kernel_is_exact_on_rows_padded_for_it). With N a multiple of
# 16 (BLOCK is one) every kv block is whole 16-key steps. GPUs run Triton's kernel: no padding there.
CPU_FLEX_MULTIPLE = 16


def key_ranges(position_ids: torch.Tensor, prefix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi), each (B, N) long: query q may attend exactly the keys lo[q]..hi[q] (`packed_allowed`).

    An instance is a run of consecutive positions from 0, so lo (its first token) is q - position[q];
    hi is q (causal), or for a token of the NL prefix the prefix's last token (bidirectional). That
    needs positions counting up by 1 and the prefix to be a run from its instance's start, as the
    collator makes them; both are asserted on the device (`torch._assert_async`: no host sync).
    """
    b, n = position_ids.shape
    t = torch.arange(n, device=position_ids.device)  # (N,)
    steps = position_ids[:, 1:] - position_ids[:, :-1]
    torch._assert_async(
        ((position_ids[:, 1:] == 0) | (steps == 1)).all() & (position_ids[:, 0] == 0).all(),
        "position_ids must restart at 0 per instance and count up by 1",
    )
    lo = t - position_ids  # (B, N)
    if prefix is None:
        return lo, t.expand(b, n)
    prefix = prefix.bool()
    start = position_ids == 0
    stray = prefix[:, 1:] & ~prefix[:, :-1] & ~start[:, 1:]  # a prefix token after a non-prefix one
    torch._assert_async(~stray.any(), "prefix must be a run of tokens from the start of its instance")
    # the first token after q that ends q's prefix run (not prefix, or a new instance): a suffix min
    ends = torch.where(~prefix | start, t, n)  # (B, N)
    first_end = ends.flip(-1).cummin(-1).values.flip(-1)  # (B, N): min over t' >= t
    after = torch.cat([first_end[:, 1:], torch.full((b, 1), n, device=t.device, dtype=first_end.dtype)], dim=1)
    return lo, torch.where(prefix, after - 1, t)


def _ordered(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, indices) of a (B, QB, KB) bool block map in BlockMask's form: (B, 1, QB) int32 and
    (B, 1, QB, KB) int32, the first `count` indices of a row being its set blocks in order."""
    count = flags.sum(-1, dtype=torch.int32)
    order = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return count[:, None], order[:, None]


def block_mask(position_ids: torch.Tensor, prefix: torch.Tensor | None = None):
    """The `packed_allowed` rule as a flex_attention BlockMask (B, 1, N, N) of BLOCK x BLOCK tiles.

    Built from the instance boundaries and prefix lengths in O(B·N) memory plus (B, N/BLOCK,
    N/BLOCK) block maps (`torch.nn.attention.flex_attention.create_block_mask` evaluates the
    rule at every (q, k): O(B·N²)). Every query's keys form one range [lo, hi] (`key_ranges`), and
    so do a query block's: kv block J is visited iff it meets [min lo, max hi] of the block's
    queries, and full (no mask_mod) iff it lies in every query's range (inside [max lo, min hi])
    and inside the sequence; the rest are partial, where the kernel applies `mask_mod`.
    """
    from torch.nn.attention.flex_attention import BlockMask

    b, n = position_ids.shape
    lo, hi = key_ranges(position_ids, prefix)
    seg = instance_ids(position_ids)  # (B, N)
    pre = torch.zeros_like(position_ids, dtype=torch.bool) if prefix is None else prefix.bool()

    nb = -(-n // BLOCK)
    pad = nb * BLOCK - n  # query rows past N do not exist: padded so that they constrain nothing

    def per_block(x: torch.Tensor, fill: int, reduce) -> torch.Tensor:  # (B, N) -> (B, QB, 1)
        x = torch.nn.functional.pad(x, (0, pad), value=fill)
        return reduce(x.view(b, nb, BLOCK), dim=-1, keepdim=True)

    lo_min, lo_max = per_block(lo, n, torch.amin), per_block(lo, -1, torch.amax)
    hi_max, hi_min = per_block(hi, -1, torch.amax), per_block(hi, n, torch.amin)
    k_first = torch.arange(nb, device=lo.device) * BLOCK  # (KB,)
    k_last = k_first + BLOCK - 1
    visited = (k_first <= hi_max) & (k_last >= lo_min)  # (B, QB, KB)
    inside = k_last < n  # a kv block past the sequence's end stays partial (the kernel bounds it)
    q_inside = (torch.arange(nb, device=lo.device) * BLOCK + BLOCK <= n)[:, None]  # (QB, 1)
    full = visited & (lo_max <= k_first) & (hi_min >= k_last) & inside & q_inside
    partial = visited & ~full

    def mask_mod(bi, h, q, k):  # scalar indices, vectorised by torch; only partial blocks call it
        return (seg[bi, q] == seg[bi, k]) & ((k <= q) | (pre[bi, q] & pre[bi, k]))

    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=BLOCK, mask_mod=mask_mod, seq_lengths=(n, n))


def pad_rows(
    input_ids: torch.Tensor, position_ids: torch.Tensor, prefix: torch.Tensor | None, multiple: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B, N) rows padded on the right to a multiple of `multiple` tokens, each pad an instance of its
    own (position 0, token 0, not prefix), as the collator's tail pads: no real token sees a pad, so
    the logits of the first N tokens are unchanged."""
    pad = -input_ids.shape[1] % multiple
    if pad == 0:
        return input_ids, position_ids, prefix
    zeros = torch.zeros(input_ids.shape[0], pad, dtype=torch.long, device=input_ids.device)
    ids = torch.cat([input_ids, zeros.to(input_ids.dtype)], dim=1)
    pos = torch.cat([position_ids, zeros.to(position_ids.dtype)], dim=1)
    if prefix is not None:
        prefix = torch.cat([prefix.bool(), zeros.bool()], dim=1)
    return ids, pos, prefix


def attention_path(model_type: str, impl: str) -> str:
    """In words, which attention kernel and mask packed rows get (for `mmpt doctor` and the benches)."""
    check_supported(model_type, impl)
    if impl == "flex_attention":
        return "flex_attention + BlockMask (instance blocks, bidirectional NL prefix; empty blocks skipped)"
    if impl == "sdpa":
        return "sdpa + dense (B, 1, N, N) bool mask (the reference; math/efficient kernel, not flash)"
    return f"{impl} + dense (B, 1, N, N) additive mask (the reference)"


def mask_from_allowed(allowed: torch.Tensor, impl: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 4-D mask `impl` honours, from a boolean (B, Q, K) or (B, 1, Q, K) `allowed` (True = attend).

    sdpa: (B, 1, Q, K) bool, passed to `scaled_dot_product_attention` as is. eager: (B, 1, Q, K)
    additive float of `dtype`, 0 where allowed and the dtype's minimum elsewhere (eager adds the mask
    to the scores, so a boolean mask would add 1/0 and mask nothing). Every query row must allow at
    least one key (a fully masked row gives NaN under sdpa); the caller guarantees that.
    """
    if allowed.dtype != torch.bool:
        raise ValueError(f"allowed must be a bool tensor, got {allowed.dtype}")
    if allowed.dim() == 3:
        allowed = allowed[:, None]  # (B, 1, Q, K): one mask shared by all heads
    if allowed.dim() != 4:
        raise ValueError(f"allowed must be (B, Q, K) or (B, 1, Q, K), got shape {tuple(allowed.shape)}")
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    if impl in _REFUSED_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {impl!r} is refused: {_REFUSED_IMPLEMENTATIONS[impl]}")
    raise ValueError(f"no 4-D mask form is known for attention implementation {impl!r}; use eager or sdpa")


def packed_mask(
    position_ids: torch.Tensor, prefix: torch.Tensor | None, impl: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The 4-D mask of packed rows for `impl`, from (B, N) position ids and prefix flags."""
    return mask_from_allowed(packed_allowed(position_ids, prefix), impl, dtype)


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    # A DeepSpeed engine (or DDP) wraps the Hugging Face model as `.module`.
    return getattr(model, "module", model)


def prepare_model(model: torch.nn.Module) -> None:
    """Make a stock model honour an explicit 4-D mask fully (idempotent; called by `packed_forward`).

    GPT-Neo's eager attention applies its own built-in causal mask (the non-persistent `bias`
    buffer, which also carries the sliding window of its local layers) before adding the given mask.
    That would keep the NL prefix causal, so the buffer is widened to "no causality": all True on
    global layers, the symmetric band |q - k| < window_size on local layers. With a causal mask
    given (as transformers always builds for eager) the product is unchanged, so generation and
    ordinary forwards behave exactly as before; only a bidirectional prefix can now take effect.
    """
    hf = _hf_model(model)
    if getattr(hf.config, "model_type", None) != "gpt_neo" or getattr(hf, "_mmpt_prepared", False):
        return
    window = hf.config.window_size
    for module in hf.modules():
        bias = getattr(module, "bias", None)
        if not (isinstance(bias, torch.Tensor) and bias.dtype == torch.bool and hasattr(module, "attention_type")):
            continue
        n = bias.shape[-1]
        idx = torch.arange(n, device=bias.device)
        if module.attention_type == "local":
            wide = (idx[:, None] - idx[None, :]).abs() < window
        else:
            wide = torch.ones(n, n, dtype=torch.bool, device=bias.device)
        module.bias = wide.view(1, 1, n, n)  # assigning a tensor to a registered buffer name keeps it a buffer
    hf._mmpt_prepared = True


def attn_implementation(model: torch.nn.Module) -> tuple[str, str]:
    """(model_type, attention implementation) of a (possibly wrapped) model."""
    config = _hf_model(model).config
    return config.model_type, config._attn_implementation


def packed_forward(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, N, V) of packed rows: the stock model with position ids and the packed 4-D mask
    (a BlockMask under flex_attention).

    `batch` needs `input_ids` and `position_ids` (B, N); `prefix` (B, N) bool is optional.
    """
    model_type, impl = attn_implementation(model)
    check_supported(model_type, impl)
    prepare_model(model)
    hf = _hf_model(model)
    ids, pos, prefix = batch["input_ids"], batch["position_ids"], batch.get("prefix")
    keep = {}  # every position's logits, unless pads were added
    if impl == "flex_attention":
        if ids.device.type == "cpu":
            if torch.is_grad_enabled():
                raise ValueError("flex_attention has no backward on CPU in torch: train on CPU with sdpa or eager")
            n = ids.shape[1]
            ids, pos, prefix = pad_rows(ids, pos, prefix, CPU_FLEX_MULTIPLE)  # torch's CPU kernel: see CPU_FLEX_MULTIPLE
            if ids.shape[1] != n:  # the head (or the fused loss in its place) sees the N real positions only
                keep = {"logits_to_keep": torch.arange(n, device=ids.device)}
        mask = block_mask(pos, prefix)
    else:
        mask = packed_mask(pos, prefix, impl, dtype=hf.dtype)
    out = model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False, **keep)
    return out.logits
