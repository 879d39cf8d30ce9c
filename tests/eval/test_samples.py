"""mmpt.eval.samples: shards, settings checks (merge and resume: tests/eval/test_generate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmpt.eval.samples import check_settings, shard

# --- ranks and shards -------------------------------------------------------------------------


def test_shard() -> None:  # (ranks come from mmpt.distributed.detect: tests/test_distributed.py)
    items = list(range(23))
    parts = [shard(items, r, 4) for r in range(4)]
    assert [i for part in parts for i in part] == items and max(map(len, parts)) - min(map(len, parts)) <= 1


def test_check_settings_names_the_difference(tmp_path: Path) -> None:
    settings = {"engine": "ours", "seed": 0, "temperature": 0.8}
    check_settings(tmp_path / "s.jsonl", {("T/0", 0): {"settings": settings}}, settings)  # the same: fine
    with pytest.raises(ValueError, match=r"T/0 #1 .*seed 0 on disk vs 1 now.*mix samples"):
        check_settings(tmp_path / "s.jsonl", {("T/0", 1): {"settings": settings}}, {**settings, "seed": 1})
    with pytest.raises(ValueError, match="no settings"):
        check_settings(tmp_path / "s.jsonl", {("T/0", 0): {}}, settings)
