"""Wall and CPU time of a whole `mmpt demo` in a fresh folder, against its budget (docs/figures.md).

    python bench/demo_time.py            # the full demo: budget 10 minutes on 2 idle cores
    python bench/demo_time.py --quick    # `mmpt demo --quick`: its budget is in `mmpt demo --help`

Runs the `mmpt` console script as a user does (a new folder, nothing resumed) and prints the demo's
own timing table (wall and CPU seconds of every stage and command), then one line: total wall time,
CPU seconds of the demo and every process it started, the load average before and after (a busy
machine stretches the wall time, not the CPU seconds), and whether the wall time is within the
budget (exit status 1 when not). Quote it with the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="time `mmpt demo --quick`")
    ap.add_argument("--keep", type=Path, default=None, help="run in this (new) folder and keep it")
    args = ap.parse_args()
    mmpt = shutil.which("mmpt")
    if mmpt is None:
        print("bench/demo_time.py: no `mmpt` console script on PATH (pip install '.[demo]')", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="mmpt-demo-time-"))
    out = work / "demo"
    if out.exists():
        print(f"bench/demo_time.py: {out} exists; the demo would resume instead of running whole", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    t0 = time.monotonic()
    proc = subprocess.run([mmpt, "demo", "--out", str(out), *(["--quick"] if args.quick else [])], check=False)
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the demo and every process it waited for
    load_after = os.getloadavg()
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode:
        print(f"bench/demo_time.py: mmpt demo exited with {proc.returncode}", file=sys.stderr)
        return proc.returncode
    from mmpt.demo.report import clock
    from mmpt.demo.stages import BUDGET_S, QUICK_BUDGET_S  # what `mmpt demo --help` states

    budget = QUICK_BUDGET_S if args.quick else BUDGET_S
    verdict = "within" if wall <= budget else "OVER"
    print(
        f"\nmmpt demo{' --quick' if args.quick else ''}: {clock(wall)} wall, "
        f"{usage.ru_utime + usage.ru_stime:.0f} CPU seconds on {os.cpu_count()} cores; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {verdict} the budget of {budget / 60:.0f} min"
    )
    return 0 if wall <= budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
