"""`mmpt export CKPT --out DIR`: a standard Hugging Face checkpoint from a DeepSpeed (ZeRO-2/3) one.

DIR gets model.safetensors + config.json (`use_cache: true`) and generation_config.json (eos `<eot>`,
pad `<pad>`), the tokenizer, separation.json (SeparationMap.save) and
mmpt.json (`mmpt.model.folder`, which owns that folder) that generation reads.
CKPT is one checkpoint (OUTPUT_DIR/checkpoints/step_N) or a run's OUTPUT_DIR (its newest complete one).
The fp32 master weights are consolidated from every rank's shards, one tensor at a time, and written
in the training dtype (`config.json`'s dtype: bf16 for a bf16 run, half the size of fp32). The model
is built on the meta device (no random init, no memory until a tensor is assigned), so a 7B export
costs the bf16 weights plus one fp32 tensor, not minutes of init and three copies. Tied input/output
embeddings are re-tied after loading, since the consolidated state dict may hold the shared tensor
only once. DIR is written as a temporary sibling (`.DIR.partial-PID`) and renamed into place at the
end, so a process killed mid-export leaves DIR as it was (absent, or the previous export), never
half written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mmpt import train_checkpoints
from mmpt.model.folder import CheckpointMeta, save_model, write_inference_configs


def write_export_meta(directory: Path, hf_config, tokenizer, smap, data_meta: dict, train_config) -> None:
    """What a checkpoint needs beyond its weights to become a Hugging Face model (rank 0 writes it)."""
    meta = CheckpointMeta(
        layout=data_meta["layout"],
        objective=train_config.objective,
        attn_implementation=train_config.attn_implementation,
        separation=smap.separation,
        code_format="flat" if data_meta.get("code_format") == "keep-flat" else "plain",  # trained flattened: prompt so
    )
    save_model(None, smap, directory, tokenizer, meta, hf_config=hf_config)


def resolve_checkpoint(path: str | Path) -> Path:
    """A complete checkpoint directory from a checkpoint path or a run's output directory."""
    path = Path(path)
    if train_checkpoints.is_complete(path):
        return path
    done = train_checkpoints.list_complete(path)
    if done:
        return done[-1]
    raise FileNotFoundError(f"{path}: neither a complete checkpoint nor a run directory holding one")


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Consolidate `ckpt` into a Hugging Face checkpoint in `out`, in the dtype it was trained in."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt, out = resolve_checkpoint(ckpt), Path(out)
    # lazy: each value is consolidated from the (memory-mapped) shards when `.contiguous()` is called
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name, lazy_mode=True)
    return write_hf_model(ckpt / train_checkpoints.HF_DIR, state, out, where=str(ckpt))


def write_hf_model(hf_dir: Path, state: dict, out: Path, where: str) -> Path:
    """Write `state` (name → tensor, or DeepSpeed's lazy tensor) as the model of `hf_dir`'s config in `out`.

    The model is built on the meta device and every tensor is assigned, cast to the config's dtype
    one at a time: no random init, and one fp32 tensor alive at once beside the output.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(hf_dir)
    dtype = _training_dtype(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    expected = model.state_dict()
    weights, done = {}, {}  # done: id of a lazy value -> its name, for names sharing one tensor
    for name in list(state):
        lazy = state.pop(name)
        if id(lazy) in done:
            weights[name] = weights[done[id(lazy)]]
            continue
        done[id(lazy)] = name
        tensor = lazy.contiguous()  # fp32, the parameter's shape
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{where}: {name} has shape {tuple(tensor.shape)}, the model config says {tuple(expected[name].shape)}"
            )
        weights[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        del tensor
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    del weights
    model.tie_weights()
    params = model.state_dict(keep_vars=True)
    untied_missing = [k for k in missing if params[k].device.type == "meta"]  # a tied alias of a loaded tensor is fine
    if unexpected or untied_missing:
        raise ValueError(f"{where}: weights do not match the model config (missing {untied_missing}, unexpected {unexpected})")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        partial.mkdir(parents=True)
        for item in hf_dir.iterdir():  # tokenizer, separation.json, mmpt.json (config.json is rewritten below)
            if item.is_file():
                shutil.copy2(item, partial / item.name)
        model.save_pretrained(partial)
        write_inference_configs(partial, config, _tokenizer(partial))  # also for checkpoints saved with use_cache false
        publish(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # interrupted (an exception, a save request): nothing half written
    return out


def publish(partial: Path, out: Path) -> None:
    """Rename the finished folder `partial` to `out`, replacing a previous export; `out` is at every
    moment absent, the old folder or the new one. Leftovers of killed exports next to it (their
    process is gone) are removed."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if stale != partial and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)  # a directory cannot be renamed over a non-empty one
    os.rename(partial, out)
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _tokenizer(directory: Path):
    """The tokenizer saved in `directory`, or None where it holds none."""
    from transformers import AutoTokenizer

    if not (directory / "tokenizer_config.json").is_file():
        return None
    return AutoTokenizer.from_pretrained(directory)


def _training_dtype(config):
    """The dtype the model was trained in, as its saved config records it (fp32 when it does not)."""
    import torch

    dtype = getattr(config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"config.json: dtype {dtype} is not a training dtype (float32, bfloat16, float16)")
    return dtype


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmpt export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="OUTPUT_DIR/checkpoints/step_N, or OUTPUT_DIR for its newest complete one")
    parser.add_argument("--out", required=True, help="directory for the Hugging Face checkpoint")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"mmpt export: {e}", file=sys.stderr)
        return 2
    print(f"mmpt export: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
