"""bench/prepare_memory.py end to end on the tiny pairs: both modes run, and chunking changes no instance count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import prepare_memory  # noqa: E402


@pytest.mark.heavy
def test_prepare_memory_bench_runs_both_modes(capsys):
    assets = ROOT / "tests" / "assets"
    results = prepare_memory.main(["--pairs", str(assets / "pairs.jsonl"), "--tokenizer", str(assets / "tokenizer"),
                                   "--max-seq-length", "256", "--chunk-tokens", "600", "--scales", "1", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert "whole corpus (baseline): peak RssAnon 2x/1x = " in out and "chunks of 600: peak RssAnon 2x/1x = " in out
    assert len(results) == 4
    for (_mode, scale), r in results.items():
        assert r["anon_mb"] > 50 and r["hwm_mb"] >= r["anon_mb"]  # a sampled python process, not zeros
        assert r["tokens"] == results["whole corpus (baseline)", scale]["tokens"]  # same instances either way
        assert r["instances"] == scale * results["whole corpus (baseline)", 1]["instances"]
        assert r["fill_ratio"] == r["tokens"] / (r["rows"] * 256) and r["rows"] >= -(-r["tokens"] // 256)
