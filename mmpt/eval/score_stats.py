"""Scores files of `mmpt score`: read them, their mean with a bootstrap interval, and a paired comparison of two."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmpt.jsonl import read_jsonl, require

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def read_scores(path: str | Path) -> dict[str, float]:
    """{task_id: mean NLL per code token} of a scores file."""
    scores = {}
    for number, row in read_jsonl(path):
        require(row, {"task_id": str, "nll": float}, f"{path}:{number}")
        scores[row["task_id"]] = row["nll"]
    if not scores:
        raise ValueError(f"{path}: no scores")
    return scores


def bootstrap_interval(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (CONFIDENCE) of the mean of `values` (n,), resampling its entries."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)  # (resamples,)
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def summarize(scores: dict[str, float], seed: int = 0) -> dict:
    """Mean NLL per code token over problems, its bootstrap interval, and the problem count."""
    values = np.asarray(list(scores.values()), dtype=np.float64)
    lo, hi = bootstrap_interval(values, seed=seed)
    return {"nll": float(values.mean()), "ci_low": lo, "ci_high": hi, "confidence": CONFIDENCE, "n_problems": len(values)}


def compare(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict:
    """Paired comparison of two scores files: mean of (a − b) over their common problems, its
    bootstrap interval (problems resampled, pairs kept), and whether the interval excludes 0."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two score files share no problem")
    diff = np.asarray([a[t] - b[t] for t in common], dtype=np.float64)
    lo, hi = bootstrap_interval(diff, seed=seed)
    return {
        "difference": float(diff.mean()), "ci_low": lo, "ci_high": hi, "confidence": CONFIDENCE,
        "excludes_zero": bool(lo > 0 or hi < 0), "n_problems": len(common),
        "a_nll": float(np.mean([a[t] for t in common])), "b_nll": float(np.mean([b[t] for t in common])),
    }  # fmt: skip


def compare_text(result: dict, a_name: str, b_name: str) -> str:
    """One honest sentence on a `compare` result (lower NLL = the reference is more likely)."""
    # 3 significant digits: differences between tiny models can be far below 1e-3 nats
    ci = f"{result['confidence']:.0%} interval [{result['ci_low']:+.3g}, {result['ci_high']:+.3g}]"
    head = (
        f"Mean NLL per code token of the reference solutions: {a_name} {result['a_nll']:.4f}, {b_name} "
        f"{result['b_nll']:.4f} nats over {result['n_problems']} problems; difference {a_name} − {b_name} "
        f"{result['difference']:+.3g} nats ({ci}, paired bootstrap over problems)."
    )
    if not result["excludes_zero"]:
        return head + " The interval includes 0: at this scale the two cannot be told apart by this metric."
    better = a_name if result["difference"] < 0 else b_name
    return head + f" The interval excludes 0: {better} finds the reference solutions more likely."
