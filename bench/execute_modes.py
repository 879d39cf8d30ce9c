"""How many tasks `mmpt execute` judges split vs in one process (mode shared), and why, on references.

    python bench/execute_modes.py --benchmark humaneval
    python bench/execute_modes.py --benchmark mbpp

Runs every task's reference solution through `mmpt execute` (full sandbox) and prints the count of
tasks per mode, the tasks judged in one process with their reasons, and any reference that failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--benchmark", default="humaneval")
    ap.add_argument("--data-file", default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from mmpt.eval.problems import load_problems
    from mmpt.eval.sandbox.execute import main as execute_main

    problems = load_problems(args.benchmark, args.data_file)
    with tempfile.TemporaryDirectory() as tmp:
        samples, out = Path(tmp, "samples.jsonl"), Path(tmp, "results.jsonl")
        samples.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n" for p in problems))
        data = ["--data-file", args.data_file] if args.data_file else []
        rc = execute_main(
            ["--benchmark", args.benchmark, *data, "--samples", str(samples), "--out", str(out), "--workers", str(args.workers)]
        )
        results = [json.loads(line) for line in out.open()]
    modes = Counter(r["mode"] for r in results)
    print(f"{args.benchmark}: {len(results)} tasks; split {modes['split']}, shared {modes['shared']} (rc {rc})")
    for r in sorted(results, key=lambda r: r["task_id"]):
        if r["mode"] == "shared":
            print(f"  shared  {r['task_id']}: {r['shared_reason']}")
    for r in results:
        if not r["passed"]:
            print(f"  reference failed  {r['task_id']} ({r['mode']}): {r['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
