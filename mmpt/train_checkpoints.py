"""Training checkpoints: DeepSpeed state + data position + RNG, a completion marker, rotation, resume.

Layout of OUTPUT_DIR/checkpoints/step_00000120/:
    (DeepSpeed files)   model shards, optimizer shards, scheduler (written by every rank)
    rng_rank{r}.pt      this rank's Python/NumPy/torch RNG states
    hf/                 config.json, tokenizer, separation.json, mmpt.json: what export needs
    complete.json       written by rank 0 after every rank has finished; {"step": 120,
                        "world_size": 8, "per_device_batch_size": ..., ...}: the batch layout
A directory without `complete.json` (a job killed mid-save) is never resumed from, nor one saved
with another batch layout (the data position and the schedule count in its global batches). Every
rank fsyncs the files it wrote before the barrier that precedes the marker, so a marker on a shared
filesystem never points at shards still in some node's page cache; rank 0 alone picks the
checkpoint to resume and broadcasts it, so that ranks with different views of the directory load
the same step. When a run saves is `Checkpointer`'s to say (every `save_steps` steps, the last
step, a save request). OUTPUT_DIR itself (shared by every rank, its lock, run_state.json) is `mmpt.run_dir`'s.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from mmpt.config import ConfigError
from mmpt.distributed import Watchdog
from mmpt.jsonl import read_json, write_json

MARKER = "complete.json"
HF_DIR = "hf"
_STEP_DIR = re.compile(r"step_(\d+)$")
# the files of a rank in a step directory: DeepSpeed's ZeRO shards (data-parallel rank r) and our RNG
_RANK_FILE = re.compile(r"(?:^|_)zero_pp_rank_(\d+)_|^rng_rank(\d+)\.pt$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def step_of(path: str | Path) -> int:
    """The step of a checkpoint directory (`step_00000120` -> 120)."""
    return int(_STEP_DIR.match(Path(path).name).group(1))


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def list_complete(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def find_resume(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint `resume` asks for: auto = newest complete one (or None), never = None, else a path."""
    if resume == "never":
        return None
    if resume == "auto":
        done = list_complete(output_dir)
        return done[-1] if done else None
    path = Path(resume)
    if not is_complete(path):
        raise FileNotFoundError(f"resume={resume!r}: not a complete checkpoint (no {MARKER} in it)")
    return path


def choose_resume(resume: str, output_dir: str | Path) -> Path | None:
    """`find_resume` as rank 0 sees it, broadcast to every rank (a collective when distributed).

    Another node may list the directory from a stale cache of a shared filesystem (NFS attribute
    caching, Lustre), where it would find an older or no checkpoint and load another step.
    """
    import torch.distributed as torch_dist

    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return find_resume(resume, output_dir)
    picked = [None]
    if torch_dist.get_rank() == 0:
        try:
            found = find_resume(resume, output_dir)
            picked = [str(found) if found is not None else None]
        except FileNotFoundError as e:
            picked = [e]  # every rank raises the same error rather than rank 0 alone
    torch_dist.broadcast_object_list(picked, src=0)
    if isinstance(picked[0], Exception):
        raise picked[0]
    return None if picked[0] is None else Path(picked[0])


def owner(name: str) -> int:
    """The rank that writes the step directory's file `name`: its ZeRO/RNG rank, else rank 0
    (DeepSpeed's unpartitioned model states and `latest`, hf/, the marker)."""
    m = _RANK_FILE.search(name)
    return int(m.group(1) or m.group(2)) if m else 0


def fsync_own(path: Path, rank: int) -> None:
    """Flush the files under `path` that rank `rank` wrote, and the directories, to stable storage.

    One fsync per own file (O(files per rank), not O(world x files) on every rank: each one is a
    round trip to the servers of a parallel filesystem). A file of ours gone by the time it is
    opened (hf/'s temporary names, renamed meanwhile) needs none.
    """
    for root, _, files in os.walk(path):
        for name in files:
            if owner(name) != rank:
                continue
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the directory entries (new file names, a rename) are durable too
    finally:
        os.close(fd)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(engine, output_dir: str | Path, step: int, client_state: dict, write_hf, keep: int, layout: dict | None = None) -> Path:
    """Save on every rank (collective); rank 0 then marks the checkpoint complete and rotates old ones.

    `client_state` (the data position, tokens seen) goes into DeepSpeed's own files; `write_hf(dir)`
    writes the export metadata (rank 0 only); `layout` (the batch layout `load` checks) goes into
    the marker.
    """
    import deepspeed.comm as dist

    root = checkpoints_dir(output_dir)
    tag = step_dir_name(step)
    path = root / tag
    engine.save_checkpoint(str(root), tag=tag, client_state=dict(client_state, step=step))
    torch.save(_rng_state(), path / f"rng_rank{dist.get_rank()}.pt")
    if dist.get_rank() == 0:
        write_hf(path / HF_DIR)
    # this rank's shards and RNG on stable storage (a file another node wrote flushes nothing here)
    fsync_own(path, dist.get_rank())
    dist.barrier()  # every rank's shards and RNG are on disk before the marker
    if dist.get_rank() == 0:
        marker = {"step": step, "world_size": dist.get_world_size(), **(layout or {})}
        write_json(path / MARKER, marker)  # atomic: complete or not
        _fsync_dir(path)
        rotate(output_dir, keep, newest=path)
    dist.barrier()
    return path


class Checkpointer:
    """Saves a run's training checkpoints on its cadence: every `save_steps` steps (0: none between),
    at the last step, and at the step every rank stops at on a save request. A save is collective:
    every rank calls `save` at every step with the same arguments. The watchdog allows it ten times
    its timeout (a slow shared filesystem)."""

    def __init__(self, engine, output_dir: str | Path, *, save_steps: int, keep: int, layout: dict, write_hf,
                 watchdog: Watchdog) -> None:  # fmt: skip
        self.engine, self.output_dir = engine, output_dir
        self.save_steps, self.keep, self.layout = save_steps, keep, layout
        self.write_hf = write_hf  # (hf dir) -> None: the export metadata, written by rank 0
        self.watchdog = watchdog

    def should_save(self, step: int, last_step: bool, requested: bool) -> bool:
        return bool(self.save_steps and step % self.save_steps == 0) or last_step or requested

    def save(self, step: int, client_state: dict, *, last_step: bool, requested: bool) -> Path | None:
        """The checkpoint of step `step` when one is due (`save`), else None."""
        if not self.should_save(step, last_step, requested):
            return None
        self.watchdog.beat_slow()
        path = save(self.engine, self.output_dir, step, client_state, self.write_hf, self.keep, self.layout)
        self.watchdog.beat()
        return path


def rotate(output_dir: str | Path, keep: int, newest: Path) -> None:
    """Keep the `keep` newest complete checkpoints; drop older ones and half-written leftovers."""
    done = list_complete(output_dir)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    newest_step = step_of(newest)
    for p in checkpoints_dir(output_dir).iterdir():
        m = _STEP_DIR.match(p.name)
        if m and int(m.group(1)) < newest_step and not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)


def check_layout(path: Path, layout: dict) -> None:
    """Refuse to resume `path` with another batch layout (world size, batch size, accumulation, seed).

    The data position is a count of global batches in the epoch's seeded order, and the schedule a
    count of steps: with any of these changed, a resume would silently skip or repeat rows.
    """
    saved = read_json(path / MARKER, dict)
    for key, now in layout.items():
        if key in saved and saved[key] != now:
            raise ConfigError(
                f"{path}: saved with {key}={saved[key]}, this run has {key}={now}; resume with the same value "
                f"(the data position and the schedule count in its global batches), or start afresh "
                f"(--resume never, or another output_dir)"
            )


def load(engine, path: Path, layout: dict, rank: int) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG from `path` after `check_layout`;
    returns the client state."""
    check_layout(path, layout)
    load_path, client_state = engine.load_checkpoint(
        str(path.parent), tag=path.name, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise RuntimeError(f"{path}: DeepSpeed could not load this checkpoint")
    rng = path / f"rng_rank{rank}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    return client_state
