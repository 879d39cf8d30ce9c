"""pass@k from execution results: the one unbiased estimator, the metrics dict, `mmpt passk`.

    mmpt passk --results R.jsonl --k 1,10,100 [--per-task] [--tensorboard runs/x --step 1000]

prints the metrics as JSON on stdout and a table on stderr. For incremental results (task ids
`X#i`, records with given_lines/total_lines) the top-level pass@k is the *macro* incremental pass@k
(every incremental task weighs the same) and `incremental_micro` adds the *micro* one (the samples
of all tasks of one original problem pooled, then averaged over problems), as the paper's official
evaluation reports both; `by_fraction` breaks the macro one down by fraction of the solution given. As the official
evaluation, a pass@k (macro and micro alike) is reported only where every task has at least k
samples; `not_reported` says why a requested k is missing, and a run that can report none fails.
HumanEval+ / MBPP+ results (records with `base` and `plus` runs) add `base` (pass@k of the base
runs alone) and `plus` (of `passed`: base and plus both passed, EvalPlus's "plus" figure, equal to
the top-level pass@k), each with the same estimator and the same rule for k.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.jsonl import read_jsonl, require

# fraction of the reference body given, as [lo, hi) bins (the last one closed at 1)
FRACTION_BINS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def bin_name(lo: float, hi: float) -> str:
    """The key of bin [lo, hi) in `by_fraction`: "0.75-1.00"."""
    return f"{lo:.2f}-{hi:.2f}"


def fraction_bin(result: dict) -> str | None:
    """The FRACTION_BINS key of an incremental record (given_lines / total_lines); None for a plain task."""
    if not result.get("total_lines"):
        return None
    f = result["given_lines"] / result["total_lines"]
    for lo, hi in FRACTION_BINS:
        if lo <= f < hi or (hi == 1.0 and f == 1.0):
            return bin_name(lo, hi)
    return None


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with n samples, c correct: 1 − C(n−c, k) / C(n, k).

    Computed as 1 − ∏_{i=n−c+1}^{n} (1 − k/i), which never forms the huge binomials.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _mean_pass(counts: list[tuple[int, int]], ks: list[int]) -> dict[str, float]:
    """pass@k averaged over tasks, for each k that every task has samples for."""
    return {
        f"pass@{k}": sum(estimate_pass_at_k(n, c, k) for n, c in counts) / len(counts)
        for k in ks
        if counts and all(n >= k for n, _ in counts)
    }


def missing_ks(counts: dict[str, list[int]], ks: list[int]) -> dict[str, str]:
    """{"pass@k": why} for each k that some task has fewer than k samples for (it is not reported)."""
    why = {}
    for k in ks:
        short = sorted((n, t) for t, (n, _) in counts.items() if n < k)
        if short:
            n, task = short[0]
            why[f"pass@{k}"] = f"{len(short)} of {len(counts)} tasks have fewer than {k} samples ({task} has {n})"
    return why


def pass_at_k_metrics(results: Iterable[dict], ks: Iterable[int], per_task: bool = False) -> dict:
    """{"pass@k": ...} over tasks (a k only where every task has >= k samples), plus `n_tasks`,
    `n_samples`; `by_fraction` for incremental results; `per_task` ({task: {n, c, pass@k}}) on request."""
    ks = sorted(set(ks))
    tasks: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # task -> [n, c]
    bins: dict[str, str | None] = {}  # task -> its fraction bin (incremental tasks only)
    problems: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # original problem -> pooled [n, c]
    base: dict[str, int] = {}  # HumanEval+ / MBPP+: task -> samples whose base run passed
    for r in results:
        t = tasks[r["task_id"]]
        t[0] += 1
        t[1] += bool(r["passed"])
        if isinstance(r.get("base"), dict):
            base[r["task_id"]] = base.get(r["task_id"], 0) + (r["base"].get("status") == "passed")
        if r.get("total_lines"):
            bins[r["task_id"]] = fraction_bin(r)
        pooled = problems[r.get("base_task_id") or r["task_id"].split("#")[0]]
        pooled[0] += 1
        pooled[1] += bool(r["passed"])
    counts = [tuple(v) for v in tasks.values()]
    metrics: dict = {**_mean_pass(counts, ks), "n_tasks": len(tasks), "n_samples": sum(n for n, _ in counts)}
    if base:  # HumanEval+ / MBPP+
        metrics["base"] = {**_mean_pass([(tasks[t][0], c) for t, c in base.items()], ks), "n_tasks": len(tasks)}
        metrics["plus"] = {**_mean_pass(counts, ks), "n_tasks": len(tasks)}
    if bins:
        metrics["incremental_macro"] = {**_mean_pass(counts, ks), "n_tasks": len(tasks)}
        # the official rule: micro pass@k only for the k every incremental task has samples for
        reported = [k for k in ks if all(n >= k for n, _ in counts)]
        metrics["incremental_micro"] = {
            **_mean_pass([tuple(v) for v in problems.values()], reported),
            "n_problems": len(problems),
        }
        by_fraction = {}
        for lo, hi in FRACTION_BINS:
            inside = [tuple(tasks[t]) for t, b in bins.items() if b == bin_name(lo, hi)]
            if inside:
                by_fraction[bin_name(lo, hi)] = {**_mean_pass(inside, ks), "n_tasks": len(inside)}
        metrics["by_fraction"] = by_fraction
    if missing := missing_ks(tasks, ks):
        metrics["not_reported"] = missing
    if per_task:
        metrics["per_task"] = {
            t: {"n": n, "c": c, **{f"pass@{k}": estimate_pass_at_k(n, c, k) for k in ks if k <= n}} for t, (n, c) in tasks.items()
        }
    return metrics


def read_results(path: Path) -> list[dict]:
    """Result records; each needs `task_id` and `passed`."""
    rows = []
    for number, row in read_jsonl(path):
        require(row, {"task_id": str, "passed": bool}, f"{path}:{number}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no results")
    return rows


def format_table(metrics: dict) -> str:
    keys = [k for k in metrics if k.startswith("pass@")]
    lines = [f"{'':<12}" + "".join(f"{k:>10}" for k in keys) + f"{'tasks':>8}"]
    if "base" not in metrics:
        lines.append(f"{'all':<12}" + "".join(f"{metrics[k]:>10.4f}" for k in keys) + f"{metrics['n_tasks']:>8}")
    rows = [(name, metrics[name]) for name in ("base", "plus") if name in metrics]
    rows += [(name.removeprefix("incremental_"), metrics[name]) for name in ("incremental_macro", "incremental_micro")
             if name in metrics]  # fmt: skip
    for name, row in rows + list(metrics.get("by_fraction", {}).items()):
        count = row.get("n_tasks", row.get("n_problems"))  # micro counts original problems
        lines.append(f"{name:<12}" + "".join(f"{row[k]:>10.4f}" if k in row else f"{'-':>10}" for k in keys) + f"{count:>8}")
    return "\n".join(lines)


def tensorboard_scalars(metrics: dict, prefix: str = "eval") -> dict[str, float]:
    """{tag: value} of the pass@k scalars and the incremental breakdown: PREFIX/pass@k,
    PREFIX/incremental_{macro,micro}/pass@k, PREFIX/incremental_{bin}/pass@k; HumanEval+ / MBPP+
    also PREFIX/{base,plus}/pass@k."""
    tags = {f"{prefix}/{key}": value for key, value in metrics.items() if key.startswith("pass@")}
    for name in ("base", "plus"):
        tags.update({f"{prefix}/{name}/{key}": value for key, value in metrics.get(name, {}).items() if key.startswith("pass@")})
    for name, row in metrics.get("by_fraction", {}).items():
        tags.update({f"{prefix}/incremental_{name}/{key}": value for key, value in row.items() if key.startswith("pass@")})
    for name in ("incremental_macro", "incremental_micro"):
        tags.update({f"{prefix}/{name}/{key}": value for key, value in metrics.get(name, {}).items() if key.startswith("pass@")})
    return tags


def log_tensorboard(metrics: dict, logdir: Path, step: int) -> None:
    """Add the pass@k scalars (and the incremental breakdown) to a run's TensorBoard at `step`."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for tag, value in tensorboard_scalars(metrics).items():
        writer.add_scalar(tag, value, step)
    writer.close()


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("mmpt passk", "pass@k from `mmpt execute` results.")
    ap.add_argument("--results", type=Path, required=True, help="results JSONL written by `mmpt execute`")
    ap.add_argument("--k", default="1,10,100", help="comma-separated ks")
    ap.add_argument("--per-task", action="store_true", help="add each task's n, c and pass@k")
    ap.add_argument("--tensorboard", type=Path, default=None, help="log the scalars to this run directory")
    ap.add_argument("--step", type=int, default=0, help="TensorBoard step (e.g. the checkpoint's)")
    a = ap.parse_args(argv)
    try:
        ks = [int(k) for k in a.k.split(",") if k.strip()]
        if not ks or min(ks) < 1:
            raise ValueError(f"--k must list positive integers, got {a.k!r}")
        metrics = pass_at_k_metrics(read_results(a.results), ks, per_task=a.per_task)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt passk: {e}", file=sys.stderr)
        return 2
    for key, why in metrics.get("not_reported", {}).items():
        print(f"mmpt passk: {key} not reported: {why} (pass@k needs k samples of every task)", file=sys.stderr)
    if not any(key.startswith("pass@") for key in metrics):
        print(f"mmpt passk: {a.results}: none of --k {a.k} can be reported", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    print(format_table(metrics), file=sys.stderr)
    if a.tensorboard:
        log_tensorboard(metrics, a.tensorboard, a.step)
    return 0
