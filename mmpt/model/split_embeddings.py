"""Split (modality-relative) embeddings: code-copy rows in the model, code-only decoding, the saved map.

The id map itself is `mmpt.data.separation.SeparationMap`; prompts are remapped by
`mmpt.data.instances.encode_prompt`. This module puts the map into a model (`extend_model`),
restricts generation to the code vocabulary (`restrict_to_code`), decodes copies back to text
(`decode_code`) and keeps the map beside every checkpoint (`save_model` / `load_model`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmpt.data.separation import SeparationMap

PAD_MULTIPLE = 64  # embedding rows are padded to this multiple (faster matmuls); extra rows are unused


def _is_tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def _copy_rows(param: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """param[dst] = param[src] along dim 0, also for a ZeRO-3 partitioned parameter."""
    if hasattr(param, "ds_id"):
        # Under ZeRO-3 `.data` is an empty shard: gather the full tensor, write, and let rank 0's
        # version be re-partitioned to every rank on exit.
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
            param.data[dst.to(param.device)] = param.data[src.to(param.device)]
        return
    with torch.no_grad():
        param[dst.to(param.device)] = param[src.to(param.device)]


def _rows(param: torch.Tensor) -> int:
    # ZeRO-3 keeps the full shape in `ds_shape`; `.shape` is the local (empty) shard.
    return int(getattr(param, "ds_shape", param.shape)[0])


def extend_model(model, smap: SeparationMap, *, mean_resizing: bool = True) -> int:
    """Give `model` a row per id of `smap` and initialise each code copy from its original.

    Resizes the input (and untied output) embeddings to at least `smap.vocab_size`, padded to a
    multiple of 64, through transformers' own resize (ZeRO-3 aware); new rows (sentinels added to
    the tokenizer, padding) are initialised by it. Then copies the input row of every separated
    token into its code copy, and the output row (and bias) too when the head is untied. A tied
    head stays tied. Returns the number of embedding rows.
    """
    tied = _is_tied(model)
    rows = _rows(model.get_input_embeddings().weight)
    if rows < smap.vocab_size:
        model.resize_token_embeddings(smap.vocab_size, pad_to_multiple_of=PAD_MULTIPLE, mean_resizing=mean_resizing)
        rows = _rows(model.get_input_embeddings().weight)
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


def save_model(model, smap: SeparationMap, directory: str | Path, tokenizer=None) -> Path:
    """Write a Hugging Face checkpoint with the separation map (and tokenizer) beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    smap.save(directory)
    return directory


def load_model(directory: str | Path, tokenizer=None, **from_pretrained):
    """(model, tokenizer, smap) of a checkpoint written by `save_model` (or any plain HF checkpoint).

    Without a saved map the separation is `none`. `from_pretrained` goes to
    `AutoModelForCausalLM.from_pretrained` (dtype, attn_implementation, ...).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(directory)
    smap = SeparationMap.load_or_none(directory, base_vocab_size=len(tokenizer))
    if smap.base_vocab_size != len(tokenizer):
        raise ValueError(
            f"{Path(directory) / 'separation.json'}: base_vocab_size {smap.base_vocab_size} does not match the "
            f"tokenizer's {len(tokenizer)} tokens"
        )
    model = AutoModelForCausalLM.from_pretrained(directory, **from_pretrained)
    rows = _rows(model.get_input_embeddings().weight)
    if rows < smap.vocab_size:
        raise ValueError(f"{directory}: the model has {rows} embedding rows, its separation map needs {smap.vocab_size}")
    return model, tokenizer, smap
