"""mmpt/eval/score_stats.py: the bootstrap interval of a mean and the paired comparison of two scores files."""

from __future__ import annotations

import numpy as np
import pytest

from mmpt.eval.score_stats import bootstrap_interval, compare, compare_text


def test_bootstrap_and_paired_comparison():
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 1.0, 400)
    lo, hi = bootstrap_interval(values)
    half = 1.96 * values.std() / np.sqrt(len(values))  # the normal approximation the bootstrap should match
    assert lo == pytest.approx(values.mean() - half, abs=0.03) and hi == pytest.approx(values.mean() + half, abs=0.03)
    base = {f"t{i}": float(v) for i, v in enumerate(rng.normal(3.0, 1.0, 200))}
    shifted = {t: v - 0.05 + float(rng.normal(0, 0.01)) for t, v in base.items()}  # paired: a small, sure gain
    result = compare(shifted, base)
    assert result["difference"] == pytest.approx(-0.05, abs=0.005) and result["excludes_zero"]
    assert "excludes 0" in compare_text(result, "separated", "baseline") and "separated finds" in compare_text(
        result, "separated", "baseline"
    )
    noisy = {t: v + float(rng.normal(0, 1.0)) for t, v in base.items()}
    assert not compare(noisy, base)["excludes_zero"]
    with pytest.raises(ValueError, match="share no problem"):
        compare({"a": 1.0}, {"b": 1.0})
