"""mmpt/train_checkpoints.py: which checkpoint is resumed, rotation, fsyncs, the batch layout, the RNG round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mmpt import train_checkpoints


def make(out, step: int, complete: bool):
    path = train_checkpoints.checkpoints_dir(out) / train_checkpoints.step_dir_name(step)
    path.mkdir(parents=True)
    (path / "shard.pt").write_bytes(b"x")
    if complete:
        (path / train_checkpoints.MARKER).write_text(json.dumps({"step": step, "world_size": 2}))
    return path


def test_newest_complete_is_resumed_and_half_written_never(tmp_path):
    assert train_checkpoints.find_resume("auto", tmp_path) is None
    make(tmp_path, 5, True)
    newest = make(tmp_path, 10, True)
    make(tmp_path, 15, False)  # killed mid-save
    assert train_checkpoints.find_resume("auto", tmp_path) == newest
    assert train_checkpoints.find_resume("never", tmp_path) is None
    assert train_checkpoints.find_resume(str(newest), tmp_path) == newest
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        train_checkpoints.find_resume(str(train_checkpoints.checkpoints_dir(tmp_path) / "step_00000015"), tmp_path)


def test_steps_sort_numerically(tmp_path):
    make(tmp_path, 99999999, True)
    make(tmp_path, 100, True)
    assert train_checkpoints.find_resume("auto", tmp_path).name == "step_99999999"


def test_rotate_keeps_the_newest_and_drops_stale_partials(tmp_path):
    for s in (1, 2, 3):
        make(tmp_path, s, True)
    make(tmp_path, 4, False)  # an older half-written one
    newest = make(tmp_path, 5, True)
    train_checkpoints.rotate(tmp_path, keep=2, newest=newest)
    names = sorted(p.name for p in train_checkpoints.checkpoints_dir(tmp_path).iterdir())
    assert names == ["step_00000003", "step_00000005"]


def test_rng_round_trip():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = train_checkpoints._rng_state()
    want = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    train_checkpoints._set_rng_state(state)
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(want[0], got[0]) and want[1:] == got[1:]


class _Engine:
    """Stands in for a DeepSpeed engine: `save_checkpoint` writes a shard per rank, as ZeRO does."""

    def save_checkpoint(self, root: str, tag: str, client_state: dict) -> None:
        path = Path(root) / tag
        path.mkdir(parents=True, exist_ok=True)
        (path / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"shard")
        (path / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"optim")


def test_every_shard_is_fsynced_before_the_marker(tmp_path, monkeypatch):
    import os

    import deepspeed.comm

    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda: 1)
    monkeypatch.setattr(deepspeed.comm, "barrier", lambda: None)
    synced, marked = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        if Path(dst).name == train_checkpoints.MARKER:
            marked.append(list(synced))  # what was durable when the checkpoint became complete
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_hf = lambda d: (d.mkdir(parents=True), (d / "config.json").write_text("{}"))
    path = train_checkpoints.save(_Engine(), tmp_path, 3, {"n_rows": 1}, write_hf, keep=2, layout={"seed": 1})
    files = {str(p) for p in path.rglob("*") if p.is_file() and p.name != train_checkpoints.MARKER}
    assert len(files) == 4  # two shards, this rank's RNG, hf/config.json
    [durable] = marked
    assert files <= set(durable), files - set(durable)
    assert any(
        Path(f).parent == path and Path(f).name.startswith(f".{train_checkpoints.MARKER}.tmp") for f in durable
    )  # its content too
    assert str(path) in synced[len(durable) :]  # and the rename in the directory, after it


RESUME_WORKER = """
import sys, torch.distributed as dist
from pathlib import Path
from mmpt import train_checkpoints
rank, out, init = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
if rank == 1:  # a node whose view of the shared directory is stale: it sees only the older checkpoint
    train_checkpoints.list_complete = lambda o: [train_checkpoints.checkpoints_dir(o) / "step_00000005"]
print(train_checkpoints.choose_resume("auto", out).name)
dist.destroy_process_group()
"""


def test_rank0_chooses_the_checkpoint_every_rank_resumes(tmp_path):
    import subprocess
    import sys

    make(tmp_path, 5, True)
    make(tmp_path, 10, True)
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", RESUME_WORKER, str(r), str(tmp_path), init], stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["step_00000010", "step_00000010"], outs


def test_fsync_own_skips_a_file_renamed_meanwhile(tmp_path, monkeypatch):
    import os

    (tmp_path / "shard.pt").write_bytes(b"x")
    # the listing still names rank 0's temporary file, which its rename has taken away since
    monkeypatch.setattr(os, "walk", lambda path: iter([(str(tmp_path), [], ["shard.pt", ".mmpt.json.tmp123"])]))
    train_checkpoints.fsync_own(tmp_path, 0)  # no FileNotFoundError: a file gone needs no flush


# the files of a 2-rank ZeRO-3 (bf16) checkpoint as DeepSpeed 0.19 names them, plus ours
ZERO3_FILES = {
    "zero_pp_rank_0_mp_rank_00_model_states.pt": 0,
    "zero_pp_rank_1_mp_rank_00_model_states.pt": 1,
    "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt": 0,
    "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt": 1,
    "zero_pp_rank_12_mp_rank_00_model_states.pt": 12,
    "mp_rank_00_model_states.pt": 0,  # ZeRO-1/2: the unpartitioned model, written by rank 0
    "rng_rank0.pt": 0,
    "rng_rank1.pt": 1,
    "rng_rank11.pt": 11,
    "config.json": 0,  # hf/
    "tokenizer.json": 0,
}


def test_each_file_has_one_owner():
    assert {name: train_checkpoints.owner(name) for name in ZERO3_FILES} == ZERO3_FILES


def test_each_rank_fsyncs_only_its_own_files(tmp_path, monkeypatch):
    import os

    for name in ZERO3_FILES:
        (tmp_path / ("hf" if name.endswith(".json") else "") / name).parent.mkdir(exist_ok=True)
        (tmp_path / ("hf" if name.endswith(".json") else "") / name).write_bytes(b"x")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    for rank in (0, 1):
        synced.clear()
        train_checkpoints.fsync_own(tmp_path, rank)
        files = {Path(p).name for p in synced if Path(p).is_file()}
        assert files == {n for n, r in ZERO3_FILES.items() if r == rank}, (rank, files)
        assert {str(tmp_path), str(tmp_path / "hf")} <= set(synced)  # the directory entries too


def test_a_resume_with_another_batch_layout_is_refused(tmp_path):
    from mmpt.config import ConfigError

    path = make(tmp_path, 5, True)
    layout = {"world_size": 2, "per_device_batch_size": 3, "gradient_accumulation_steps": 2, "seed": 7}
    (path / train_checkpoints.MARKER).write_text(json.dumps({"step": 5, **layout}))
    train_checkpoints.check_layout(path, layout)  # the same: fine
    for key, value in (("world_size", 4), ("per_device_batch_size", 4), ("gradient_accumulation_steps", 1), ("seed", 8)):
        with pytest.raises(ConfigError, match=f"saved with {key}={layout[key]}, this run has {key}={value}"):
            train_checkpoints.check_layout(path, {**layout, key: value})
