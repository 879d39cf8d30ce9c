"""The data a run trains on and the batches of each step: the epoch's order, this rank's shard, collation, prefetch.

Each optimizer step takes the next `per_device_batch_size * gradient_accumulation_steps * world`
rows of the epoch's shuffled order (one permutation per epoch, the same on every rank); rank r
takes every world-th of them, so the shards are disjoint and every row is used once per epoch.
`StepLoader` collates step k+1 in a thread while step k runs on the device.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from mmpt.config import ConfigError, TrainConfig
from mmpt.data.instances import sentinel_ids
from mmpt.data.prepare import load_prepared
from mmpt.data.separation import SeparationMap
from mmpt.hub import from_hub
from mmpt.modality import CODE, NL
from mmpt.objectives import IGNORE, Collator, loss_index


@dataclass
class TrainData:
    """The prepared data of a run (`mmpt prepare`'s DATA_DIR), checked against the run's model and tokenizer."""

    rows: object  # datasets.Dataset of packed rows: input_ids, position_ids, modality
    meta: dict  # DATA_DIR/meta.json
    tokenizer: object  # DATA_DIR/tokenizer, sentinels included
    smap: SeparationMap  # DATA_DIR/separation.json


def check_same_tokenizer(data_tokenizer, other, what: str, data_dir: str) -> None:
    """Error unless every token of `other` has the same id in the data's tokenizer (which may add sentinels)."""
    vocab = data_tokenizer.get_vocab()
    for token, i in sorted(other.get_vocab().items(), key=lambda kv: kv[1]):
        if vocab.get(token) != i:
            raise ConfigError(
                f"{data_dir}/meta.json: the data was prepared with tokenizer "
                f"{data_tokenizer.name_or_path!r}, which differs from {what} (token {token!r} is id {i} there, "
                f"{vocab.get(token)} in the data); prepare the data with the model's tokenizer"
            )


def load_data(config: TrainConfig) -> TrainData:
    """The prepared data of `config.data_dir`; clear errors for a wrong data dir or another tokenizer."""
    if not Path(config.data_dir).is_dir():
        raise ConfigError(f"config field 'data_dir': {config.data_dir!r} does not exist; run `mmpt prepare` first")
    rows, meta = load_prepared(config.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(config.data_dir) / "tokenizer"))
    if config.tokenizer:
        with from_hub(config.tokenizer, "config field 'tokenizer'"):
            other = AutoTokenizer.from_pretrained(config.tokenizer)
        check_same_tokenizer(tokenizer, other, f"tokenizer={config.tokenizer!r}", config.data_dir)
    elif isinstance(config.model, str):
        try:
            model_tokenizer = AutoTokenizer.from_pretrained(config.model)
        except (OSError, ValueError):
            model_tokenizer = None  # a model folder without a tokenizer: nothing to compare with
        if model_tokenizer is not None:
            check_same_tokenizer(tokenizer, model_tokenizer, f"the tokenizer of model {config.model!r}", config.data_dir)
    smap = SeparationMap.load(config.data_dir)
    if smap.base_vocab_size != len(tokenizer):
        raise ConfigError(f"{config.data_dir}/separation.json: base_vocab_size {smap.base_vocab_size} != {len(tokenizer)} tokens")
    return TrainData(rows, meta, tokenizer, smap)


def make_collator(config: TrainConfig, data: TrainData, pad_to: int | None) -> Collator:
    """The collator of the run's objective; `pad_to` rows of one length (flex_attention), else the longest row's."""
    return Collator(
        config.objective, sentinel_ids(data.tokenizer), data.smap, seed=config.seed, signature_loss=config.signature_loss,
        pad_to=pad_to,
    )  # fmt: skip


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of one epoch, the same on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def step_rows(order: np.ndarray, k: int, rank: int, world: int, batch: int, accum: int) -> list[list[int]]:
    """Row indices of this rank's micro-batches in step `k` of the epoch (short or empty at its tail)."""
    chunk = order[k * batch * accum * world : (k + 1) * batch * accum * world]
    mine = chunk[rank::world]  # disjoint shards; their union is the step's global batch
    return [mine[m * batch : (m + 1) * batch].tolist() for m in range(accum)]


def trained_counts(labels: torch.Tensor, modality: torch.Tensor) -> tuple[int, int]:
    """(code, nl) counts of the targets `modality_loss` trains on in a batch (it predicts label t+1)."""
    target = labels[:, 1:] != -100
    return int((target & (modality[:, 1:] == CODE)).sum()), int((target & (modality[:, 1:] == NL)).sum())


def collate_rows(source, collate, indices: list[int], width: int) -> tuple[dict[str, torch.Tensor], int]:
    """(collated micro-batch of `width` rows, its non-pad tokens) of rows `indices` of `source`.

    Rows past `indices` (an empty or short micro-batch at the epoch's tail) are stand-ins (row 0)
    that train nothing: every rank must run every micro-step (ZeRO-3 gathers are collective), and
    under flex_attention every batch has the full shape (a new shape recompiles flex).
    """
    picked = indices + [0] * (width - len(indices))
    got = source[picked]  # column -> list over the picked rows
    keys = ("input_ids", "position_ids", "modality")
    batch = collate([{k: got[k][j] for k in keys} | {"row": i} for j, i in enumerate(picked)])
    if len(indices) < width:
        batch["labels"][len(indices) :] = IGNORE
        batch["loss_index"] = loss_index(batch["labels"])
    return batch, sum(len(ids) for ids in got["input_ids"][: len(indices)])


class RowBatches:
    """Micro-batches of rows of one source (the training rows, or the held-out ones): `self(indices)`
    is (the collated batch, its non-pad tokens). With a `width` every batch has that many rows
    (flex_attention compiles once per shape), else as many as asked for (at least one)."""

    def __init__(self, source, collator: Collator, width: int | None) -> None:
        self.source = source
        self.collator = collator
        self.width = width

    def __len__(self) -> int:
        return len(self.source)

    def __call__(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], int]:
        return collate_rows(self.source, self.collator, indices, self.width or max(len(indices), 1))


@dataclass
class StepBatch:
    """The host side of one optimizer step on this rank."""

    rows: list[list[int]]  # row indices of each micro-batch (short or empty at the epoch's tail)
    batches: list[dict[str, torch.Tensor]]  # the collated micro-batches, page-locked on a GPU host
    tokens: list[int]  # non-pad tokens of each micro-batch
    trained: list[int]  # trained tokens (the loss's targets) of each micro-batch


class StepLoader:
    """This rank's micro-batches of each optimizer step, collated one step ahead in a thread.

    `next()` returns step k's (collated while step k-1 ran) and starts on step k+1; a collation
    error surfaces there, in the main thread. `pin`: page-locked host memory, so that a copy to the
    GPU runs without the host waiting for it.
    """

    def __init__(self, batches: RowBatches, *, seed: int, rank: int, world: int, per_device_batch_size: int,
                 accumulation: int, steps_per_epoch: int, total_steps: int, pin: bool) -> None:  # fmt: skip
        self.batches = batches
        self.seed, self.rank, self.world = seed, rank, world
        self.per_device_batch_size, self.accumulation = per_device_batch_size, accumulation
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.pin = pin
        self.orders: dict[int, np.ndarray] = {}  # the current epoch's row order (one permutation per epoch, not per step)
        self.prefetch = ThreadPoolExecutor(1, thread_name_prefix="mmpt-prefetch")
        self.pending: Future | None = None
        self.step = 0  # the step `pending` collates

    def load(self, k: int) -> StepBatch:
        """The host side of optimizer step k (runs in the prefetch thread)."""
        epoch, k_in_epoch = divmod(k, self.steps_per_epoch)
        if epoch not in self.orders:
            self.orders.clear()
            self.orders[epoch] = epoch_order(len(self.batches), self.seed, epoch)
        self.batches.collator.epoch = epoch
        micro = step_rows(self.orders[epoch], k_in_epoch, self.rank, self.world, self.per_device_batch_size, self.accumulation)
        batches, n_tokens = zip(*(self.batches(idx) for idx in micro))
        counts = [sum(trained_counts(b["labels"], b["modality"])) for b in batches]  # host ints, from host tensors
        if self.pin:
            batches = [{name: t.pin_memory() for name, t in b.items()} for b in batches]
        return StepBatch(micro, list(batches), list(n_tokens), counts)

    def start(self, step: int) -> None:
        """Begin collating at step `step` (0, or where a resumed run left off)."""
        self.step = step
        self.pending = self.prefetch.submit(self.load, step)

    def next(self) -> StepBatch:
        """The current step's batches; the next step's are collated meanwhile."""
        batch = self.pending.result()
        self.step += 1
        if self.step < self.total_steps:
            self.pending = self.prefetch.submit(self.load, self.step)
        return batch

    def close(self, cancel: bool = False) -> None:
        """Stop the prefetch thread (`cancel`: drop a step collated ahead that will not run)."""
        self.prefetch.shutdown(cancel_futures=cancel)
