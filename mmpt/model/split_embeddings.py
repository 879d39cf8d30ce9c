"""Split (modality-relative) embeddings: code-copy rows in the model, code-only decoding, the saved map.

The id map itself is `mmpt.data.separation.SeparationMap`; prompts are remapped by
`mmpt.data.instances.encode_prompt`. This module puts the map into a model (`extend_model`),
restricts generation to the code vocabulary (`restrict_to_code`), decodes copies back to text
(`decode_code`); the map is saved beside every checkpoint by `mmpt.model.folder`.
"""

from __future__ import annotations

import contextlib

import torch

from mmpt.data.separation import SeparationMap

PAD_MULTIPLE = 64  # embedding rows are padded to this multiple (faster matmuls); extra rows are unused


def _is_tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def _partitioned(param: torch.Tensor) -> bool:
    """Whether `param` is a ZeRO-3 parameter (its `.data` is this rank's shard, often empty)."""
    return hasattr(param, "ds_id")


def _gathered(params: list[torch.Tensor], modify: bool):
    """Full ZeRO-3 parameters inside the block (rank 0's writes kept when `modify`); plain ones pass."""
    params = [p for p in params if _partitioned(p)]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)


def _copy_rows(param: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """param[dst] = param[src] along dim 0, also for a ZeRO-3 partitioned parameter."""
    # Under ZeRO-3 `.data` is an empty shard: gather the full tensor, write, and let rank 0's
    # version be re-partitioned to every rank on exit.
    with _gathered([param], modify=True), torch.no_grad():
        param.data[dst.to(param.device)] = param.data[src.to(param.device)]


def embedding_rows(param: torch.Tensor) -> int:
    """Rows of an embedding or head weight, also of a ZeRO-3 shard."""
    # ZeRO-3 keeps the full shape in `ds_shape`; `.shape` is the local (empty) shard.
    return int(getattr(param, "ds_shape", param.shape)[0])


def _zero3_build(ds_config: dict | None):
    """`deepspeed.zero.Init` with the run's DeepSpeed config: parameters built inside are born partitioned."""
    import deepspeed
    from transformers.integrations.deepspeed import deepspeed_config

    config = ds_config if ds_config is not None else deepspeed_config()
    if config is None:
        raise RuntimeError(
            "the model's parameters are ZeRO-3 partitioned, but no DeepSpeed config is known: pass ds_config= "
            "to extend_model, or keep transformers' HfDeepSpeedConfig alive while building the model"
        )
    # The dtype comes from the config's bf16/fp16 flags, as for the rest of the model (an explicit
    # `dtype=` is not honoured on CPU by deepspeed 0.19: it becomes bf16 there).
    return deepspeed.zero.Init(config_dict_or_path=config)


class _NewRows(torch.nn.Module):
    """Holds one new (rows, *shape) parameter, so that `deepspeed.zero.Init` partitions it at birth."""

    def __init__(self, shape: tuple[int, ...], like: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(shape, dtype=like.dtype, device=like.device))


def _row_owners(model) -> list[tuple[torch.nn.Module, str]]:
    """(module, attribute) of every parameter with a row per token: weights (V, H), a head bias (V,)."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    owners = [(emb, "weight")]
    if head is not None and not _is_tied(model):
        owners.append((head, "weight"))
    if head is not None and getattr(head, "bias", None) is not None:
        owners.append((head, "bias"))
    return owners


def _init_rows(param: torch.Tensor, rows: slice, trained: int, mean_resizing: bool, std: float) -> None:
    """Initialise `param.data[rows]` as new rows: the mean of the trained rows [0, trained), or
    normal(0, std) for a weight and zero for a bias. `param` is a full (gathered) tensor."""
    if mean_resizing:
        param.data[rows] = param.data[:trained].float().mean(0).to(param.dtype)
    elif param.dim() == 2:
        param.data[rows].normal_(0.0, std)
    else:
        param.data[rows].zero_()


def _resize(model, rows: int, trained: int, mean_resizing: bool, ds_config: dict | None) -> None:
    """Give the input embedding, an untied output head, and a head bias (tied or not) `rows` rows.

    Old rows are kept; new rows (tokenizer sentinels, padding) are the mean of the trained rows
    [0, trained) when `mean_resizing` (transformers samples around that mean with a 1e-9-scaled
    covariance; we take the mean itself, so every launch gets the same model), else
    normal(0, initializer_range) with a zero bias. Under ZeRO-3 the new parameters are born
    partitioned inside `deepspeed.zero.Init`, so no rank holds a whole embedding outside the gather
    that fills it. The modules stay, only their parameters are swapped: subclasses (scaled
    embeddings) keep their forward.
    """
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = _is_tied(model)
    owners = _row_owners(model)
    olds = [getattr(module, name) for module, name in owners]
    zero3 = _partitioned(olds[0])
    with _zero3_build(ds_config) if zero3 else contextlib.nullcontext():
        news = [_NewRows((rows, *getattr(old, "ds_shape", old.shape)[1:]), old).weight for old in olds]
    if news[0].dtype != olds[0].dtype:
        raise RuntimeError(
            f"the DeepSpeed config builds {news[0].dtype} parameters for a {olds[0].dtype} model; "
            "its bf16/fp16 settings must match the model's dtype"
        )
    std = getattr(model.config.get_text_config(), "initializer_range", 0.02)
    with _gathered(news, modify=True), _gathered(olds, modify=False), torch.no_grad():
        for new, old in zip(news, olds):
            n = old.shape[0]
            new.data[:n] = old.data
            _init_rows(new, slice(n, None), min(trained, n), mean_resizing, std)
    for (module, name), new, old in zip(owners, news, olds):
        new.requires_grad_(old.requires_grad)
        setattr(module, name, new)
    if tied:
        head.weight = emb.weight  # still one Parameter
    emb.num_embeddings = rows
    if head is not None:
        head.out_features = rows
    model.config.get_text_config().vocab_size = rows
    if hasattr(model, "vocab_size"):
        model.vocab_size = rows


def _init_spare_rows(model, trained: int, stop: int, mean_resizing: bool) -> None:
    """Rows [trained, stop) that the checkpoint already has (padded embeddings) start as new rows too."""
    std = getattr(model.config.get_text_config(), "initializer_range", 0.02)
    params = [getattr(module, name) for module, name in _row_owners(model)]
    with _gathered(params, modify=True), torch.no_grad():
        for param in params:
            _init_rows(param, slice(trained, stop), trained, mean_resizing, std)


def extend_model(
    model,
    smap: SeparationMap,
    *,
    mean_resizing: bool = True,
    ds_config: dict | None = None,
    trained_rows: int | None = None,
) -> int:
    """Give `model` a row per id of `smap` and initialise each code copy from its original.

    Resizes the input (and untied output) embeddings to at least `smap.vocab_size`, padded to a
    multiple of 64 (`_resize`: new rows start at the mean of the trained rows), and sets
    `config.vocab_size`. `trained_rows` is the backbone tokenizer's length before `mmpt prepare`
    added its sentinels (meta.json: tokenizer.backbone_vocab_size): ids from there up to
    `smap.base_vocab_size` are new tokens, initialised like new rows even where the checkpoint
    already has rows for them (Qwen-style embeddings padded past the tokenizer hold untrained
    values there). None: every id below `smap.base_vocab_size` is trained. Then copies the input
    row of every separated token into its code copy, and the output row (and bias) too when the
    head is untied. A tied head stays tied (one Parameter). A ZeRO-3 partitioned model stays
    partitioned; its DeepSpeed config is `ds_config`, or else the one transformers'
    `HfDeepSpeedConfig` holds. Returns the number of embedding rows.
    """
    tied = _is_tied(model)
    rows = embedding_rows(model.get_input_embeddings().weight)
    trained = smap.base_vocab_size if trained_rows is None else trained_rows
    if not 0 < trained <= smap.base_vocab_size:
        raise ValueError(f"trained_rows must lie in 1..{smap.base_vocab_size} (the tokenizer's length), got {trained}")
    trained = min(trained, rows)
    spare = min(rows, smap.base_vocab_size)  # new ids that already have a row in the checkpoint
    if trained < spare:
        _init_spare_rows(model, trained, spare, mean_resizing)
    if rows < smap.vocab_size:
        rows = -(-smap.vocab_size // PAD_MULTIPLE) * PAD_MULTIPLE
        _resize(model, rows, trained, mean_resizing, ds_config)
    if tied and not _is_tied(model):
        raise RuntimeError("resizing the embeddings untied the output head; refusing to continue silently")
    if smap.separated:
        src = torch.as_tensor(smap.separated, dtype=torch.long)  # original ids
        dst = smap.base_vocab_size + torch.arange(len(src))  # their code copies
        _copy_rows(model.get_input_embeddings().weight, src, dst)
        out = model.get_output_embeddings()
        if out is not None and not tied:
            _copy_rows(out.weight, src, dst)
        if out is not None and getattr(out, "bias", None) is not None:
            _copy_rows(out.bias, src, dst)
    return rows


def restrict_to_code(logits: torch.Tensor, code_mask: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) with every id outside the code vocabulary (V,) set to -inf (for generation)."""
    if code_mask.shape != logits.shape[-1:]:
        raise ValueError(f"code_mask has shape {tuple(code_mask.shape)}, logits end in {logits.shape[-1]}")
    return logits.masked_fill(~code_mask.to(logits.device), float("-inf"))


def decode_code(tokenizer, smap: SeparationMap, ids) -> str:
    """Text of generated code ids: code copies are mapped back to their originals first."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if len(ids) and (ids.min() < 0 or ids.max() >= smap.vocab_size):
        raise ValueError(f"ids must lie in [0, {smap.vocab_size}) to decode; was generation restricted to code?")
    return tokenizer.decode(smap.to_original(ids).tolist())
