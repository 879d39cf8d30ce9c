"""Held-out evaluation: loss, loss_code and loss_nl of the validation rows, distributed like training.

`mmpt prepare --validation-fraction F` writes the held-out rows beside the training rows, as
DATA_DIR/validation (same columns: input_ids, position_ids, modality). Rank r evaluates rows
r, r+world, ... in micro-batches of `per_device_batch_size`; every rank runs the same number of
forward passes (ZeRO-3 gathers are collective), a rank whose share has run out runs a stand-in
row that counts nothing, and one all-reduce of the sums on the device ends the evaluation. Batches
go to the device from page-locked memory without the host waiting; the sums' `tolist` at the end
is the evaluation's one host sync. When a run evaluates is `Validator`'s to say (every `eval_steps`
steps and at the last one).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mmpt.distributed import Watchdog, to_device
from mmpt.model.fused_loss import packed_loss


def rank_batches(n_rows: int, rank: int, world: int, batch: int) -> list[list[int]]:
    """This rank's micro-batches of row indices; the same count on every rank (short or empty at the tail)."""
    mine = list(range(rank, n_rows, world))
    n = math.ceil(math.ceil(n_rows / world) / batch)
    return [mine[i * batch : (i + 1) * batch] for i in range(n)]


@torch.no_grad()
def evaluate(engine, fetch, n_rows: int, batch: int, rank: int, world: int, nl_mask, code_mask, beat=None) -> dict[str, float]:
    """Mean token losses over every validation row: {"loss", "loss_code"[, "loss_nl"]}.

    `fetch(indices)` collates validation rows into a batch (a stand-in row for `[]`); the losses
    are the same sums over trained tokens as in training, normalised by the global counts.
    `beat()` (the hang watchdog's) is called after every forward pass, so that a peer that dies
    mid-evaluation ends this rank within the watchdog's timeout.
    """
    import deepspeed.comm as dist

    device = engine.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # code_sum, code_count, nl_sum, nl_count
    was_training = engine.training
    engine.eval()
    for indices in rank_batches(n_rows, rank, world, batch):
        b, _ = fetch(indices)
        b = {k: to_device(v, device) for k, v in b.items()}  # pinned and asynchronous: the host does not wait
        s = packed_loss(engine, b, nl_mask, code_mask)  # the head fused into the loss: no (B, N, V) logits
        sums += torch.stack([s.code_sum, s.code_count, s.nl_sum, s.nl_count]).double()
        if beat is not None:
            beat()
    engine.train(was_training)
    if world > 1:
        dist.all_reduce(sums)
    code_sum, code_count, nl_sum, nl_count = sums.tolist()  # the one host sync of the evaluation
    out = {"loss": (code_sum + nl_sum) / max(code_count + nl_count, 1), "loss_code": code_sum / max(code_count, 1)}
    if nl_count:
        out["loss_nl"] = nl_sum / nl_count
    return out


class Validator:
    """The held-out evaluation of a run on its cadence: every `eval_steps` steps and at the last step,
    never when the data has no held-out rows (`fetch` None).

    `fetch(indices)` collates held-out rows (`mmpt.batches.RowBatches`); the watchdog allows the
    evaluation ten times its timeout, and every forward pass beats it.
    """

    def __init__(self, fetch: Callable | None, n_rows: int, *, eval_steps: int, total_steps: int, batch_size: int,
                 rank: int, world: int, nl_mask, code_mask, watchdog: Watchdog) -> None:  # fmt: skip
        self.fetch, self.n_rows = fetch, n_rows
        self.eval_steps, self.total_steps, self.batch_size = eval_steps, total_steps, batch_size
        self.rank, self.world = rank, world
        self.nl_mask, self.code_mask = nl_mask, code_mask  # (V,) bool each, on the device
        self.watchdog = watchdog

    def should_validate(self, step: int) -> bool:
        return self.fetch is not None and (step % self.eval_steps == 0 or step == self.total_steps)

    def validate(self, engine) -> dict[str, float]:
        """`evaluate` of every held-out row (collective: every rank calls it at the same step)."""
        self.watchdog.beat_slow()
        return evaluate(
            engine, self.fetch, self.n_rows, self.batch_size, self.rank, self.world, self.nl_mask, self.code_mask,
            beat=self.watchdog.beat,
        )  # fmt: skip
