"""The optimizer: AdamW's parameter groups and settings in the DeepSpeed JSON, and the learning-rate schedule.

DeepSpeed builds the optimizer from the JSON's `optimizer` block, whose "auto" values mmpt fills
from the config (`optimizer_settings`, called by `mmpt.config.deepspeed_config`); it is torch's
AdamW unless the JSON says otherwise (`prefer_torch_adamw`). The schedule belongs to mmpt (a JSON
with a `scheduler` is refused): `lr_schedule` hands DeepSpeed a LambdaLR of `lr_factor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

LR_SCHEDULES = ("mmpt", "official")  # see lr_factor


def lr_factor(step: int, total_steps: int, warmup_ratio: float, min_ratio: float, schedule: str = "mmpt") -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warm-up, then a cosine decay.

    `mmpt`: warm-up (step + 1) / warmup, then the cosine rescaled to end at `min_ratio` on the last
    step. `official` (the paper's scripts, source/optimization.py): warm-up step / warmup from 0,
    then the cosine toward 0, floored at `min_ratio` (it reaches the floor at about 80% of the run
    when min_ratio = 0.1). Both count warm-up steps as ceil(warmup_ratio · total_steps).
    """
    warmup = math.ceil(warmup_ratio * total_steps)
    if schedule == "official":
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(min_ratio, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_schedule(total_steps: int, warmup_ratio: float, min_ratio: float, schedule: str) -> Callable:
    """`deepspeed.initialize(lr_scheduler=...)`: optimizer -> the LambdaLR of `lr_factor` over `total_steps`."""
    import torch

    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_ratio, min_ratio, schedule)
    )


def param_groups(model, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases and norms (1-d; ZeRO-3 keeps shapes in ds_shape);
    with `decay_all` one group that decays every parameter (the official scripts)."""
    if decay_all:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer_settings(learning_rate: float, betas: tuple[float, float], eps: float, weight_decay: float) -> dict:
    """The DeepSpeed JSON's optimizer values that the mmpt config owns (dotted keys; "auto" there is filled with them)."""
    return {
        "optimizer.params.lr": learning_rate,
        "optimizer.params.betas": list(betas),
        "optimizer.params.eps": eps,
        "optimizer.params.weight_decay": weight_decay,
    }


def prefer_torch_adamw(ds: dict, device_type: str) -> None:
    """Make an Adam/AdamW of the DeepSpeed JSON `ds` torch's AdamW, fused on CUDA, unless the JSON chose.

    Not DeepSpeed's FusedAdam or CPU Adam: those are C++/CUDA ops that DeepSpeed JIT-compiles on
    first use (nvcc, ninja and CUDA_HOME on every compute node, one build lock in $HOME for all
    ranks). `torch_adam: false` (or a `fused`/`foreach` of its own) in the JSON keeps the user's choice.
    """
    optimizer = ds.get("optimizer", {})
    if str(optimizer.get("type", "")).lower() not in ("adam", "adamw"):
        return
    params = optimizer["params"]
    params.setdefault("torch_adam", True)
    if device_type == "cuda" and params["torch_adam"] is True and not {"fused", "foreach"} & params.keys():
        params["fused"] = True  # passed through to torch.optim.AdamW(fused=True)
