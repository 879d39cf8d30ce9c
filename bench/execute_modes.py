"""How many tasks `mmpt execute` judges split vs in one process (mode shared), and why, on references, for both prompt styles.

    python bench/execute_modes.py                                   # HumanEval and MBPP, prompt styles mmpt and paper
    python bench/execute_modes.py --benchmark mbpp --prompt-style paper

Runs every task's reference solution through `mmpt execute` (full sandbox) for each benchmark and
prompt style asked for, and prints per pair the count of tasks per mode (goal: 0 in one process),
each task judged in one process with its reason, and each reference that failed (under prompt
style paper the official program of some tasks fails its own reference: their failures are
listed, they are the official verdicts, not the harness's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from mmpt.eval.sandbox.execute import main as execute_main
from mmpt.eval.styles.registry import load_problems


def modes(benchmark: str, style: str, workers: int) -> int:
    problems = load_problems(style, benchmark)
    with tempfile.TemporaryDirectory() as tmp:
        samples, out = Path(tmp, "samples.jsonl"), Path(tmp, "results.jsonl")
        samples.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n" for p in problems))
        args = ["--benchmark", benchmark, "--prompt-style", style, "--samples", str(samples), "--out", str(out)]
        rc = execute_main([*args, "--workers", str(workers)])
        results = sorted((json.loads(line) for line in out.open()), key=lambda r: r["task_id"])
    counts = Counter(r["mode"] for r in results)
    print(
        f"{benchmark}, prompt style {style}: {len(results)} tasks; split {counts['split']}, in one process {counts['shared']} (rc {rc})"
    )
    for r in results:
        if r["mode"] == "shared":
            print(f"  in one process  {r['task_id']}: {r['shared_reason']}")
    for r in results:
        if not r["passed"]:
            print(f"  reference failed  {r['task_id']} ({r['mode']}): {r['detail']}")
    return counts["shared"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--benchmark", nargs="+", default=["humaneval", "mbpp"], choices=["humaneval", "mbpp"])
    ap.add_argument("--prompt-style", nargs="+", default=["mmpt", "paper"], choices=["mmpt", "paper"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    shared = sum(modes(b, s, args.workers) for b in args.benchmark for s in args.prompt_style)
    print(f"tasks judged in one process, all pairs: {shared}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
