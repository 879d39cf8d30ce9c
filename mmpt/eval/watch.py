"""`mmpt watch`: pass@k of every checkpoint of a training run as it appears, into the run's TensorBoard.

    mmpt watch runs/x --benchmark humaneval --greedy --limit 40 --max-new-tokens 300 [--incremental]
    mmpt watch runs/x --benchmark humaneval --n 20 --temperature 0.8 --top-p 0.95 --poll-s 300
    sbatch slurm/watch.sh runs/x --benchmark humaneval --greedy           (a job beside slurm/pretrain.sh)

Every complete checkpoint of OUTPUT_DIR (`checkpoints/step_N` with its `complete.json`, `mmpt.train_checkpoints`;
one being written has none and is not read), oldest first: exported to Hugging Face (`mmpt.export`) in
OUTPUT_DIR/watch/NAME/step_N/model, `mmpt generate` with the options given here (its own, shared),
the export deleted, `mmpt execute` in the sandbox, pass@k (`mmpt.eval.passk`). Then the scalars
`eval/BENCHMARK/pass@k` (and `eval/BENCHMARK/incremental_*/pass@k` with `--incremental`, which adds
the incremental tasks to the plain ones) at step N in OUTPUT_DIR/tensorboard/watch-NAME: a writer and
a folder of its own, since TensorBoard follows only the newest event file of a folder and the
training's writer is never touched; and one record per checkpoint in OUTPUT_DIR/watch/NAME/passk.jsonl.
NAME is `--name`, the benchmark by default.

A rerun skips checkpoints already in passk.jsonl and resumes a half-scored one (generate and execute
skip what is on disk); other settings in the same NAME are refused. A checkpoint that the run's
rotation (`keep_checkpoints`) deletes before its export is read is skipped with a note. It ends when
run_state.json says finished and every checkpoint is scored; when it says stopped (a save request)
it ends too after scoring what exists, unless `--follow` (slurm/pretrain.sh requeues a stopped run);
when it says failed; and when a running run writes nothing for `--idle-timeout-s` (it died without
saying so). One process, one GPU when there is one (`--device`), else the CPU.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from time import monotonic, sleep, time

from mmpt import run_dir, train_checkpoints
from mmpt.cli import command_parser
from mmpt.distributed import detect
from mmpt.eval import generate
from mmpt.eval.passk import pass_at_k_metrics, read_results, tensorboard_scalars
from mmpt.eval.samples import rank_files
from mmpt.eval.sandbox import execute
from mmpt.eval.watch_records import RECORDS, read_scores, watch_folder
from mmpt.export import export_checkpoint
from mmpt.jsonl import JsonlAppender, read_json, write_json

DEVICES = ("auto", "cpu", "cuda")
SANDBOXES = ("auto", "bwrap", "none")  # `mmpt execute --sandbox`
ENDING = {"finished": "finished", "stopped": "stopped (a save request)"}  # run states that end a watch


class WatchError(RuntimeError):
    """A checkpoint could not be scored (not a rotation): the message says which and why."""


@dataclass(frozen=True)
class WatchConfig:
    """One `mmpt watch` process over one or more training runs."""

    runs: tuple[Path, ...]  # training output_dirs
    benchmark: str  # one of mmpt.eval.benchmarks.registry.BENCHMARKS
    generate_argv: tuple[str, ...]  # `mmpt generate` options but --model, --out, --incremental
    ks: tuple[int, ...]  # pass@k reported (each <= the samples per task)
    incremental: bool = False  # the incremental tasks too (a second generate and execute per checkpoint)
    data_file: Path | None = None  # the benchmark's problems, for execute as for generate
    split: str = "test"  # the benchmark's split, for execute as for generate
    name: str | None = None  # OUTPUT_DIR/watch/NAME, OUTPUT_DIR/tensorboard/watch-NAME; None: the benchmark
    workers: int = 2  # sandboxes of `mmpt execute`
    sandbox: str = "auto"  # auto | bwrap | none (no isolation, loudly warned by execute)
    poll_s: float = 60.0  # seconds between looks at a run with nothing to score
    follow: bool = False  # wait on through a stopped run (it will be resumed) instead of ending
    idle_timeout_s: float = 3600.0  # a running run that writes nothing this long is taken as dead; 0: never
    device: str = "auto"  # generation: auto (a GPU when there is one) | cpu | cuda

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"--k must list positive integers, got {self.ks}")
        if self.workers < 1 or self.poll_s <= 0 or self.idle_timeout_s < 0:
            raise ValueError("--workers must be >= 1, --poll-s > 0 and --idle-timeout-s >= 0")
        if self.device not in DEVICES or self.sandbox not in SANDBOXES:
            raise ValueError(f"--device must be one of {DEVICES} and --sandbox one of {SANDBOXES}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """What is generated per checkpoint: the plain tasks, and the incremental ones when asked."""
        return ("plain", "incremental") if self.incremental else ("plain",)

    @property
    def settings(self) -> dict:
        """What makes a score what it is: a rerun into the same folder must match it."""
        return {"benchmark": self.benchmark, "generate": list(self.generate_argv), "incremental": self.incremental,
                "ks": list(self.ks)}  # fmt: skip


def say(message: str) -> None:
    print(f"mmpt watch: {message}", file=sys.stderr, flush=True)


def step_of(ckpt: Path) -> int:
    """The step a complete checkpoint's marker records."""
    return int(read_json(ckpt / train_checkpoints.MARKER, dict)["step"])


def files_of(ckpt: Path) -> set[str]:
    """Every file under a checkpoint folder (relative paths); empty once it is gone."""
    return {str(Path(root, name).relative_to(ckpt)) for root, _, names in os.walk(ckpt) for name in names}


def last_activity(run: Path) -> float:
    """When the run last wrote anything the watcher can see: its state, metrics, checkpoints (mtime)."""
    root = train_checkpoints.checkpoints_dir(run)
    paths = [run / run_dir.RUN_STATE, run / "metrics.jsonl", root]
    try:
        paths += list(root.iterdir())  # a save in progress changes its step folder
    except FileNotFoundError:
        pass
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:  # rotated meanwhile
            continue
    return max(times, default=0.0)


class RunWatch:
    """The watch of one run: its folder, lock, TensorBoard writer and what is scored already."""

    def __init__(self, run: Path, config: WatchConfig) -> None:
        self.run, self.config = run, config
        name = config.name or config.benchmark
        self.dir = watch_folder(run, name)
        self.records = self.dir / RECORDS
        self.tensorboard = run / "tensorboard" / f"watch-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # two watchers on one folder would score each checkpoint twice and mix their files
        self._lock = (self.dir / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise WatchError(f"{self.dir}: another `mmpt watch` is scoring this run (it holds {self.dir / '.lock'})") from None
        except OSError as e:  # a filesystem without flock (Lustre mounted without -o flock)
            say(f"{self.dir}: cannot lock ({e}); make sure no other `mmpt watch` scores this run with --name {name}")
        settings = self.dir / "settings.json"
        if settings.exists() and read_json(settings, dict) != config.settings:
            self._lock.close()
            raise WatchError(
                f"{settings}: this run was watched with other settings ({read_json(settings, dict)}, now "
                f"{config.settings}); use the same options, or another --name"
            )
        write_json(settings, config.settings)
        self.scored = {r["step"] for r in read_scores(run, name)}
        self.gone: set[str] = set()  # checkpoints rotated away before they were read
        self.ended: str | None = None  # why this run needs no more watching
        self.said = ""  # the last waiting message, said again only when it changes
        self.started = time()
        self._writer = None

    def pending(self) -> list[Path]:
        """Complete checkpoints not scored yet, oldest first."""
        todo = []
        for ckpt in train_checkpoints.list_complete(self.run):
            try:
                step = step_of(ckpt)
            except FileNotFoundError:
                continue  # rotated between the listing and now
            if step not in self.scored and ckpt.name not in self.gone:
                todo.append(ckpt)
        return todo

    def look(self) -> bool:
        """Score what is new; True when this run is done (`self.ended` says why)."""
        # the state first: a run that says finished saved its last checkpoint before saying so
        state = run_dir.read_run_state(self.run)
        for ckpt in self.pending():
            self.score(ckpt)
        now, where = state["state"], f"step {state['step']}" if "step" in state else "no step yet"
        if now == "finished" or (now == "stopped" and not self.config.follow):
            self.ended = f"the run {ENDING[now]} at {where}"
        elif now == "failed":
            self.ended = f"the run failed at {where}"
        elif now not in ("none", "stopped") and self.config.idle_timeout_s:
            idle = time() - max(last_activity(self.run), self.started)
            if idle > self.config.idle_timeout_s:
                self.ended = (f"run_state.json says {now} ({where}) but the run wrote nothing for {idle:.0f} s "
                              f"(--idle-timeout-s): it failed or was killed without saying so")  # fmt: skip
        if self.ended:
            say(f"{self.run}: {self.ended}; {len(self.scored)} checkpoint(s) scored -> {self.records}")
            self.close()
            return True
        waiting = {"none": "for the run to start (no run_state.json yet)", "stopped": "for the stopped run to resume (--follow)"}
        message = (f"{self.run}: waiting {waiting.get(now, f'for its next checkpoint ({now}, {where})')}; "
                   f"{len(self.scored)} scored; looking again every {self.config.poll_s:g} s")  # fmt: skip
        if message != self.said:
            say(message)
            self.said = message
        return False

    def score(self, ckpt: Path) -> None:
        """Export, generate, execute and pass@k of one checkpoint; its scalars and record."""
        try:
            step = step_of(ckpt)
        except FileNotFoundError:
            return self._gone(ckpt, "before it was read")
        work = self.dir / ckpt.name
        model = work / "model"
        samples = {kind: work / f"{kind}.samples.jsonl" for kind in self.config.kinds}
        results = {kind: work / f"{kind}.results.jsonl" for kind in self.config.kinds}
        seconds: dict[str, float] = {}
        say(f"{self.run}: scoring step {step} ({ckpt})")
        t0 = monotonic()
        # generation done (merged, no rank files left): the checkpoint is no longer needed
        generated = all(s.exists() and not rank_files(s) for s in samples.values())
        if not generated:
            files = files_of(ckpt)  # a complete checkpoint only ever loses files: to the run's rotation
            try:
                shutil.rmtree(model, ignore_errors=True)  # a half-written export of an earlier try
                export_checkpoint(ckpt, model)
            except Exception as e:
                # whatever the error, a checkpoint that lost files meanwhile was being deleted under us
                if files_of(ckpt) != files:
                    shutil.rmtree(model, ignore_errors=True)
                    return self._gone(ckpt, f"while it was exported ({type(e).__name__})")
                raise WatchError(f"{ckpt}: export failed: {type(e).__name__}: {e}") from e
            seconds["export"] = monotonic() - t0
            for kind in self.config.kinds:
                argv = ["--model", str(model), *self.config.generate_argv, "--out", str(samples[kind]), "--no-progress"]
                if generate.main(argv + (["--incremental"] if kind == "incremental" else [])):
                    raise WatchError(f"{ckpt}: `mmpt generate` failed (its message is above)")
            shutil.rmtree(model)
            seconds["generate"] = monotonic() - t0 - seconds["export"]
        t1 = monotonic()
        for kind in self.config.kinds:
            argv = ["--benchmark", self.config.benchmark, "--samples", str(samples[kind]), "--out", str(results[kind]),
                    "--workers", str(self.config.workers), "--sandbox", self.config.sandbox]  # fmt: skip
            if self.config.data_file is not None:
                argv += ["--data-file", str(self.config.data_file)]
            if self.config.split != "test":
                argv += ["--split", self.config.split]
            if execute.main(argv):
                raise WatchError(f"{ckpt}: `mmpt execute` failed (its message is above)")
        seconds["execute"] = monotonic() - t1
        metrics = {kind: pass_at_k_metrics(read_results(results[kind]), self.config.ks) for kind in self.config.kinds}
        seconds["total"] = monotonic() - t0
        self._log(step, ckpt, metrics, seconds)

    def _log(self, step: int, ckpt: Path, metrics: dict[str, dict], seconds: dict[str, float]) -> None:
        """The scalars at `step` (flushed: TensorBoard shows them now), then the record that marks it scored."""
        prefix = f"eval/{self.config.benchmark}"
        tags = tensorboard_scalars(metrics["plain"], prefix)
        if "incremental" in metrics:  # its top-level pass@k is the macro one, also under incremental_macro
            # (HumanEval+ / MBPP+: the plain tasks' base and plus rows stay the ones logged)
            kept = {k: v for k, v in metrics["incremental"].items() if not k.startswith("pass@") and k not in ("base", "plus")}
            tags |= tensorboard_scalars(kept, prefix)
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard))
        for tag, value in tags.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()
        plain = metrics["plain"]
        record = {"step": step, "checkpoint": ckpt.name, "benchmark": self.config.benchmark,
                  **{k: v for k, v in plain.items() if k.startswith(("pass@", "n_")) or k in ("base", "plus")},
                  "seconds": {k: round(v, 2) for k, v in seconds.items()}, "time": time()}  # fmt: skip
        if "incremental" in metrics:
            record["incremental"] = metrics["incremental"]
        with JsonlAppender(self.records) as out:
            out.write(record)
        self.scored.add(step)
        shown = " ".join(f"{k} {v:.4f}" for k, v in plain.items() if k.startswith("pass@"))
        say(f"{self.run}: step {step}: {shown} ({plain['n_tasks']} tasks, {seconds['total']:.1f} s)")

    def _gone(self, ckpt: Path, when: str) -> None:
        self.gone.add(ckpt.name)
        say(f"{self.run}: {ckpt.name} was rotated away by the run {when}; skipped (not scored)")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._lock.close()


def watch(config: WatchConfig) -> dict[Path, str]:
    """Watch every run until each one is done; {run: why it ended}."""
    watches = []
    try:
        for run in config.runs:
            watches.append(RunWatch(run, config))
        while True:
            before = sum(len(w.scored) for w in watches)
            for w in watches:
                if not w.ended:
                    w.look()
            if all(w.ended for w in watches):
                return {w.run: w.ended for w in watches}
            if sum(len(w.scored) for w in watches) == before:  # new checkpoints may have come while scoring
                sleep(config.poll_s)
    finally:
        for w in watches:
            w.close()


def use_device(device: str) -> None:
    """Generation on `device`: cpu hides every GPU from this process (before CUDA starts); cuda needs one."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no GPU is visible to this process")


# --- command line -----------------------------------------------------------------------------


def _generation_options() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(add_help=False)
    generate.add_generation_options(ap)
    return ap


def generation_argv(args: argparse.Namespace, drop: tuple[str, ...] = ("incremental",)) -> list[str]:
    """The `mmpt generate` options that say what `args` (parsed with them) says, but `drop`."""
    argv = []
    for action in _generation_options()._actions:
        value = getattr(args, action.dest)
        if action.dest in drop or value == action.default:
            continue
        flag = action.option_strings[0]
        argv += [flag] if action.nargs == 0 else [flag, str(value)]
    return argv


def default_ks(n: int) -> tuple[int, ...]:
    """pass@1, @10, @100 as far as n samples allow, and pass@n."""
    return tuple(sorted({k for k in (1, 10, 100) if k <= n} | {n}))


def _parser() -> argparse.ArgumentParser:
    ap = command_parser("mmpt watch", "pass@k of each checkpoint of a training run as it appears, into its TensorBoard.")
    ap.add_argument("runs", nargs="+", type=Path, metavar="OUTPUT_DIR", help="training run folder(s) (their output_dir)")
    generate.add_generation_options(ap)
    ap.add_argument("--k", default=None, help="comma-separated ks (default: 1, 10, 100 as far as --n allows, and --n)")
    ap.add_argument("--workers", type=int, default=2, help="sandboxes of `mmpt execute` (default 2)")
    ap.add_argument("--sandbox", default="auto", choices=SANDBOXES, help="`mmpt execute --sandbox` (none: no isolation)")
    ap.add_argument("--name", default=None,
                    help="OUTPUT_DIR/watch/NAME and OUTPUT_DIR/tensorboard/watch-NAME (default: the benchmark)")  # fmt: skip
    ap.add_argument("--poll-s", type=float, default=60.0, help="seconds between looks for new checkpoints (default 60)")
    ap.add_argument("--follow", action="store_true", help="a stopped run is waited for (slurm/pretrain.sh requeues it)")
    ap.add_argument("--idle-timeout-s", type=float, default=3600.0,
                    help="end when a live run writes nothing this long (it died unannounced; default 3600); 0: never")  # fmt: skip
    ap.add_argument("--device", default="auto", choices=DEVICES, help="generation device (auto: a GPU when there is one)")
    return ap


def config_from_args(args: argparse.Namespace) -> WatchConfig:
    """The typed config of parsed arguments."""
    # generate's own checks now, not at the first checkpoint (the model and output are per checkpoint)
    # (a training run's checkpoints are prompted in mmpt's own style unless --prompt-style says otherwise)
    style = getattr(args, "prompt_style", None) or "mmpt"
    n = generate.config_from_args(argparse.Namespace(**vars(args), model=Path("."), out=Path("."), no_progress=True), style).n
    if args.k is None:
        ks = default_ks(n)
    else:
        try:
            ks = tuple(int(k) for k in args.k.split(",") if k.strip())
        except ValueError:
            raise ValueError(f"--k must list integers, got {args.k!r}") from None
        if any(k > n for k in ks):
            raise ValueError(f"--k {args.k}: pass@k needs k <= --n ({n}) samples per task")
    return WatchConfig(
        runs=tuple(args.runs), benchmark=args.benchmark, generate_argv=tuple(generation_argv(args)), ks=ks,
        incremental=args.incremental, data_file=args.data_file, split=args.split, name=args.name, workers=args.workers,
        sandbox=args.sandbox, poll_s=args.poll_s, follow=args.follow, idle_timeout_s=args.idle_timeout_s,
        device=args.device,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
        where = detect()
        if where.world_size > 1:
            raise ValueError(f"one process scores a run; this one was launched as rank {where.rank} of {where.world_size}")
        use_device(config.device)
        ended = watch(config)
    except (ValueError, FileNotFoundError, WatchError) as e:
        say(str(e))
        return 2
    except KeyboardInterrupt:
        say("interrupted; a rerun resumes (scored checkpoints are skipped)")
        return 130
    say(f"done: {len(ended)} run(s) ended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
