"""mmpt/checkpoint.py: which checkpoint is resumed, rotation, and the RNG round trip."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mmpt import checkpoint


def make(out, step: int, complete: bool):
    path = checkpoint.checkpoints_dir(out) / checkpoint.step_dir_name(step)
    path.mkdir(parents=True)
    (path / "shard.pt").write_bytes(b"x")
    if complete:
        (path / checkpoint.MARKER).write_text(json.dumps({"step": step, "world_size": 2}))
    return path


def test_newest_complete_is_resumed_and_half_written_never(tmp_path):
    assert checkpoint.find_resume("auto", tmp_path) is None
    make(tmp_path, 5, True)
    newest = make(tmp_path, 10, True)
    make(tmp_path, 15, False)  # killed mid-save
    assert checkpoint.find_resume("auto", tmp_path) == newest
    assert checkpoint.find_resume("never", tmp_path) is None
    assert checkpoint.find_resume(str(newest), tmp_path) == newest
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        checkpoint.find_resume(str(checkpoint.checkpoints_dir(tmp_path) / "step_00000015"), tmp_path)


def test_steps_sort_numerically(tmp_path):
    make(tmp_path, 99999999, True)
    make(tmp_path, 100, True)
    assert checkpoint.find_resume("auto", tmp_path).name == "step_99999999"


def test_rotate_keeps_the_newest_and_drops_stale_partials(tmp_path):
    for s in (1, 2, 3):
        make(tmp_path, s, True)
    make(tmp_path, 4, False)  # an older half-written one
    newest = make(tmp_path, 5, True)
    checkpoint.rotate(tmp_path, keep=2, newest=newest)
    names = sorted(p.name for p in checkpoint.checkpoints_dir(tmp_path).iterdir())
    assert names == ["step_00000003", "step_00000005"]


def test_rng_round_trip():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = checkpoint._rng_state()
    want = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    checkpoint._set_rng_state(state)
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(want[0], got[0]) and want[1:] == got[1:]
