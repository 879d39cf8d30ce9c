"""The training job's tokens/s with `mmpt watch` scoring its checkpoints beside it, against the job alone.

    python bench/watch_overhead.py [--steps 100] [--save-steps 20] [--rounds 2] [--train-cpus 0] [--watch-cpus 1]

The demo's tiny run: its data (stdlib pairs, the 4096-token BPE, partial separation, rows of 512
tokens, `mmpt demo`'s own stages), the shipped configs/tiny-cpu.yaml model, Code CLM, 4 rows a
step, one process (ZeRO-3, world size 1), a checkpoint every --save-steps, all kept. Each round runs
it alone, then with a watcher started first (greedy, the demo's watch settings: the first 8
HumanEval problems, 96 new tokens, one sandbox worker). Every process is pinned to cores of its own
with `taskset`, as Slurm gives two jobs on one node disjoint cores: the trainer to --train-cpus,
the watcher (and the sandboxes it starts) to --watch-cpus; each gets as many OpenMP threads as cores.
Prints, per side and round: the trainer's tokens/s (median of its logged windows after the first;
a window times the steps only, not the saves), its wall time, CPU-seconds per 1,000 tokens and the
share of the wall it was on a core, the watcher's points against the checkpoints saved, and the
load average; then the ratios (with / alone) of the medians over rounds. Pinning binds only these
processes: on a machine shared with other jobs, theirs move to the trainer's cores while the
watcher fills its own, which lowers the trainer's share and its tokens/s but not its CPU-seconds
per token (what the watcher itself costs it). Quote it with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mmpt.demo.stages import DemoConfig, build_stages, run_stages
from mmpt.eval.watch import read_scores
from mmpt.train_checkpoints import list_complete

ROOT = Path(__file__).resolve().parents[1]
WATCH = ["--benchmark", "humaneval", "--greedy", "--limit", "8", "--max-new-tokens", "96", "--batch-size", "64",
         "--workers", "1", "--poll-s", "1"]  # fmt: skip


class LoadSampler:
    """The 1-minute load average every 2 s while a side runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def pinned(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv]


def threads(cpus: str) -> str:
    """OpenMP threads for a core list such as "0" or "2-3,5"."""
    count = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return str(count)


def data(work: Path) -> Path:
    """The demo's partial-separation rows (its pairs, tokenizer and prepare stages)."""
    config = DemoConfig(out=work / "demo")
    wanted = ("pairs", "tokenizer", "prepare-partial")
    run_stages([s for s in build_stages(config) if s.name in wanted], config.out, echo=lambda line: None)
    return config.out / "data" / "partial"


def train(rows: Path, run: Path, args: argparse.Namespace, log: Path) -> dict:
    """One training job on its cores; its tokens/s, wall and CPU seconds (its own, from wait4)."""
    overrides = {
        "data_dir": rows, "output_dir": run, "objective": "code-clm", "max_steps": args.steps,
        "save_steps": args.save_steps, "keep_checkpoints": args.steps // args.save_steps + 1, "per_device_batch_size": 4,
        "logging_steps": 5, "precision": "fp32", "gradient_checkpointing": "false", "seed": 42, "export": "false",
    }  # fmt: skip
    argv = [sys.executable, "-m", "mmpt.train", "--config", "configs/tiny-cpu.yaml"]
    argv += [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS=threads(args.train_cpus), PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(pinned(args.train_cpus, argv), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # taskset execs the trainer: this pid is the trainer's
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"bench/watch_overhead.py: training failed ({proc.returncode}); see {log}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records[1:]),
        "wall_s": wall,
        "cpu_s_per_1k_tokens": 1000 * cpu / records[-1]["tokens_seen"],
        "cpu_share": cpu / wall,  # of its cores' time, the share the trainer got
        "saved": len(list_complete(run)),
    }


def side(rows: Path, work: Path, args: argparse.Namespace, with_watcher: bool, round_: int) -> dict:
    run = work / f"run-{'watched' if with_watcher else 'alone'}-{round_}"
    shutil.rmtree(run, ignore_errors=True)
    watcher = None
    with LoadSampler() as load:
        if with_watcher:
            env = dict(os.environ, OMP_NUM_THREADS=threads(args.watch_cpus), PYTHONUNBUFFERED="1")
            log = (work / f"watch-{round_}.log").open("w")
            cmd = pinned(args.watch_cpus, [sys.executable, "-m", "mmpt", "watch", str(run), *WATCH])
            watcher = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        result = train(rows, run, args, work / f"train-{run.name}.log")
        if watcher is not None:
            t0 = time.monotonic()
            if watcher.wait(timeout=1800):
                raise SystemExit(f"bench/watch_overhead.py: the watcher failed; see {work / f'watch-{round_}.log'}")
            result["watch_after_s"] = time.monotonic() - t0  # how long the curve took to complete after training
            result["points"] = len(read_scores(run, "humaneval"))
    result["load"] = (statistics.mean(load.samples), max(load.samples)) if load.samples else os.getloadavg()[:1] * 2
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="training steps per side")
    ap.add_argument("--save-steps", type=int, default=20, help="a checkpoint every N steps")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (alone, with the watcher)")
    ap.add_argument("--train-cpus", default="0", help="cores of the trainer (taskset -c)")
    ap.add_argument("--watch-cpus", default="1", help="cores of the watcher and its sandboxes (taskset -c)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args()
    if shutil.which("taskset") is None:
        print("bench/watch_overhead.py: needs taskset (util-linux)", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="mmpt-watch-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = data(work)
    results = {False: [], True: []}
    for r in range(args.rounds):
        for with_watcher in (False, True):
            result = side(rows, work, args, with_watcher, r)
            results[with_watcher].append(result)
            name = "with watcher" if with_watcher else "alone"
            extra = (f", watcher: {result['points']} points for {result['saved']} checkpoints, done "
                     f"{result['watch_after_s']:.0f} s after training" if with_watcher else "")  # fmt: skip
            print(f"round {r} {name:>12}: {result['tokens_per_s']:.0f} tokens/s, {result['wall_s']:.0f} s, "
                  f"{result['cpu_s_per_1k_tokens']:.3f} CPU-s per 1k tokens, {100 * result['cpu_share']:.0f}% of a core; load {result['load'][0]:.1f} "
                  f"(max {result['load'][1]:.1f}){extra}", flush=True)  # fmt: skip

    def median(key: str, with_watcher: bool) -> float:
        return statistics.median(r[key] for r in results[with_watcher])

    points = [(r["points"], r["saved"]) for r in results[True]]
    print(
        f"\ntrainer on cores {args.train_cpus}, watcher on cores {args.watch_cpus}; {args.steps} steps, a checkpoint "
        f"every {args.save_steps}; medians of {args.rounds} round(s)\n"
        f"tokens/s: {median('tokens_per_s', True):.0f} with the watcher vs {median('tokens_per_s', False):.0f} alone: "
        f"{median('tokens_per_s', True) / median('tokens_per_s', False):.3f}x\n"
        f"trainer CPU-s per 1k tokens: {median('cpu_s_per_1k_tokens', True):.3f} vs {median('cpu_s_per_1k_tokens', False):.3f}: "
        f"{median('cpu_s_per_1k_tokens', True) / median('cpu_s_per_1k_tokens', False):.3f}x\n"
        f"trainer wall: {median('wall_s', True):.0f} s vs {median('wall_s', False):.0f} s; CPU time it got: "
        f"{100 * median('cpu_share', True):.0f}% vs {100 * median('cpu_share', False):.0f}% of the wall\n"
        f"watcher points / checkpoints saved: {points}\n"
        f"load average: {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    )  # fmt: skip
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(p == s for p, s in points) else 1


if __name__ == "__main__":
    raise SystemExit(main())
