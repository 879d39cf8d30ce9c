"""bench/real_shapes.py, lean: one step of 2-rank ZeRO-3 at PyCodeGPT's shape with a 151,665-id split vocabulary."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import real_shapes  # noqa: E402


@pytest.mark.heavy
def test_pycodegpt_shape_with_a_real_size_split_vocabulary_trains_on_two_ranks(tmp_path):
    from mmpt.data.tokenizer import synthetic_tokenizer

    synthetic_tokenizer(real_shapes.VOCAB, tmp_path / "tokenizer")
    r = real_shapes.run("partial", tmp_path, ROOT / "tests" / "assets" / "pairs.jsonl", tmp_path / "tokenizer",
                        steps=1, max_len=64, batch=1, timeout_s=900)  # fmt: skip
    base = real_shapes.VOCAB + 5  # prepare appends 4 sentinels and a pad to the backbone's ids
    assert r["base_vocab"] == base and r["separated"] > 0
    assert r["embedding_rows"] == -(-(base + r["separated"]) // 64) * 64  # the copies, padded to 64
    assert sorted(r["peak_rss_mb"]) == [0, 1] and all(mb > 500 for mb in r["peak_rss_mb"].values())
    # at random init the loss is about ln(V): the head really spans the whole split vocabulary
    assert len(r["losses"]) == 1 and abs(r["losses"][0] - math.log(r["embedding_rows"])) < 1.0
    assert r["export_dtype"] == "float32"
