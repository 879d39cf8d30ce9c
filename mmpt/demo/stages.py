"""`mmpt demo`'s stages: the whole pipeline on a laptop CPU, stage by stage, resumable, ending in OUT/report.md.

    mmpt demo                       # → runs/demo/report.md; budget 10 minutes on 2 idle cores
    mmpt demo --out DIR --quick     # budget 3 minutes: tiny data, a handful of steps and problems

Stages: stdlib pairs → BPE tokenizer → rows (no separation, and partial separation, same tokenizer)
→ a short modality-agnostic pre-training from random init (the stand-in "already pre-trained"
backbone, Text-Code CLM) → two further pre-trainings of that backbone with the same steps and data
order: partial separation + Code CLM, and the baseline without separation, each saving `checkpoints`
checkpoints → `mmpt watch` scores every checkpoint of both (greedy, the first `watch_limit` HumanEval
problems: the pass@1 curve a watcher job writes beside a training job) → for each, greedy and
sampled HumanEval generation, and incremental tasks of the first `incremental_limit` problems
(`mmpt generate` on 2 ranks) → the NLL of every HumanEval reference under each (`mmpt score`) →
`mmpt execute` in the sandbox → OUT/report.md (`mmpt report`, mmpt/demo/report.py).

The three trainings are one `deepspeed --num_gpus 2` launch of the shipped configs/tiny-cpu.yaml
with ZeRO-3 on CPU (gloo), and generation and scoring for both models one `torchrun --standalone`
launch: the ranks run the commands in turn (`mmpt.demo.batch`), so torch, transformers and
DeepSpeed start once per launch, not once per command. Execution is `mmpt execute`. The launchers
start, watch and stop the ranks (one dead rank stops the others). Each stage writes OUT/logs/STAGE.log
and, when it finishes, OUT/stages/STAGE.json (its wall and CPU seconds; a launch's commands each
their own in OUT/stages/STAGE.parts.rank*.jsonl); a rerun skips finished stages and commands, and
the commands themselves resume half-done work (training from its last checkpoint, generation and
execution per sample).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import select
import subprocess
import sys
import sysconfig
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.data.extract import extract_pairs
from mmpt.data.prepare import PrepareConfig, prepare
from mmpt.data.tokenizer import train_tokenizer
from mmpt.demo.layout import KINDS, MODELS, Paths
from mmpt.demo.report import timing_table, write_report
from mmpt.demo.timing import clock, cpu_seconds, read_times
from mmpt.distributed import free_port
from mmpt.jsonl import read_json, write_json

TRAIN_CONFIG = "configs/tiny-cpu.yaml"  # shipped (mmpt.shipped): the tiny architecture and its optimiser


class DemoError(RuntimeError):
    """A stage failed; the message names the stage and its log file."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run. The defaults fit 10 minutes on 2 CPU cores (docs/figures.md)."""

    out: Path = Path("runs/demo")
    sources: tuple[str, ...] = ("stdlib",)  # what `mmpt extract` mines pairs from
    vocab_size: int = 4096  # BPE vocabulary (sentinels included)
    max_seq_length: int = 512  # packed row length
    ranks: int = 2  # deepspeed ranks for training, generate ranks
    per_device_batch_size: int = 4  # rows per rank per step: 2 x 4 x 512 = 4096 tokens a step
    backbone_steps: int = 150  # modality-agnostic pre-training from random init
    backbone_learning_rate: float = 2e-3
    further_steps: int = 80  # each further pre-training (separated and baseline alike)
    further_learning_rate: float = 1e-3
    logging_steps: int = 5
    seed: int = 42
    limit: int | None = None  # plain HumanEval problems (None: all 164)
    # the first N problems are made into incremental tasks (None: all 164): 64 give 313 tasks, at least
    # 55 in every fraction bin, for a third of the time of all 1,033
    incremental_limit: int | None = 64
    n_samples: int = 5  # sampled completions per plain problem
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 96  # longer than ~80% of HumanEval's reference bodies in this tokenizer; bounds degenerate loops
    generate_batch_size: int = 64
    execute_workers: int = 2
    execute_timeout: float = 2.0  # floor of the per-task time limit (seconds)
    checkpoints: int = 4  # saved by each further pre-training, every further_steps / checkpoints steps
    watch_limit: int = 8  # HumanEval problems `mmpt watch` scores greedily at each checkpoint
    sandbox: str = "auto"  # auto|bwrap|none, passed to `mmpt execute`

    def __post_init__(self) -> None:
        for name in ("ranks", "per_device_batch_size", "backbone_steps", "further_steps", "n_samples",
                     "max_new_tokens", "generate_batch_size", "execute_workers", "logging_steps", "checkpoints",
                     "watch_limit"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"demo: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("limit", "incremental_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"demo: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def ks(self) -> tuple[int, ...]:
        """The ks reported for sampled generation."""
        return tuple(sorted({1, self.n_samples}))


# wall-time budgets on 2 idle cores, checked by bench/demo_time.py (docs/figures.md)
BUDGET_S = 600.0  # mmpt demo
QUICK_BUDGET_S = 180.0  # mmpt demo --quick


def quick_config(out: Path) -> DemoConfig:
    """A reduced demo for tests and a first look: a few stdlib modules, a handful of steps and problems."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return DemoConfig(
        out=out,
        sources=tuple(str(stdlib / name) for name in ("json", "textwrap.py", "string.py", "shlex.py")),
        vocab_size=512,
        max_seq_length=256,
        per_device_batch_size=2,
        backbone_steps=6,
        further_steps=4,
        logging_steps=1,
        limit=3,
        incremental_limit=2,
        n_samples=2,
        max_new_tokens=24,
        generate_batch_size=8,
        checkpoints=2,
        watch_limit=2,
    )


# ---- running stages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline; `run(log)` does it (writing its output under OUT)."""

    name: str  # names OUT/logs/NAME.log and OUT/stages/NAME.json
    title: str  # what the console shows
    run: Callable[[Path], None]


def run_stages(stages: list[Stage], out: Path, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Run the stages in order, skipping those with a marker; {name: seconds} of every stage.

    A failing stage raises DemoError naming the stage and its log; nothing after it runs. A stage's
    marker holds its wall seconds and its CPU seconds (this process's and its waited-for children's).
    """

    def cpu() -> float:
        return cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN)

    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(parents=True, exist_ok=True)
    start, times = time.monotonic(), {}
    for i, stage in enumerate(stages, 1):
        marker = out / "stages" / f"{stage.name}.json"
        head = f"[{i}/{len(stages)}] {stage.title}"
        if marker.exists():
            times[stage.name] = read_json(marker, dict)["seconds"]
            echo(f"{head}: done earlier, skipped ({marker})")
            continue
        log = out / "logs" / f"{stage.name}.log"
        echo(f"\n{head}  (log: {log}, demo time {clock(time.monotonic() - start)})")
        t0, c0 = time.monotonic(), cpu()
        try:
            stage.run(log)
        except DemoError:
            raise
        except Exception as e:  # an in-process stage: keep the traceback in its log, say where
            with log.open("a") as f:
                f.write(traceback.format_exc())
            raise DemoError(f"stage {stage.name!r} failed: {type(e).__name__}: {e} (traceback in {log})") from e
        seconds = time.monotonic() - t0
        times[stage.name] = seconds
        write_json(marker, {"seconds": seconds, "cpu_seconds": cpu() - c0, "finished": time.time()}, indent=None)
        echo(f"{head}: done in {clock(seconds)} (demo time {clock(time.monotonic() - start)})")
    return times


def run_logged(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run `cmd` (one process: a launcher starts the ranks itself), streaming its output to the console
    and to `log`; DemoError naming the stage and the log when it exits non-zero."""
    read_end, write_end = os.pipe()
    with log.open("ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=write_end, stderr=write_end, env={**os.environ, **(env or {})})
        os.close(write_end)  # the pipe ends (EOF) when the process and its children have closed their copies
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while True:
                # raw reads return what is there (progress bars end in \r, not \n), so progress shows as it comes
                if select.select([pipe], [], [], 1.0)[0]:
                    chunk = pipe.read(65536)
                    if not chunk:
                        break
                    f.write(chunk)
                    f.flush()
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
        rc = proc.wait()
    if rc:
        raise DemoError(f"stage {name!r} failed: `{' '.join(cmd[:6])} ...` exited with {rc}; see {log}")


def torchrun(ranks: int, module_args: list[str]) -> list[str]:
    """`torchrun --standalone` of `python -m MODULE ARGS` on `ranks` local processes (it picks a free port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", *module_args]  # fmt: skip


def deepspeed(ranks: int, module_args: list[str]) -> list[str]:
    """`deepspeed --num_gpus RANKS --module MODULE ARGS` on a free port (the launcher's default 29500 may be taken)."""
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks),
            "--master_port", str(free_port()), "--module", *module_args]  # fmt: skip


# ---- the stages ---------------------------------------------------------------------------------


def _one_thread() -> dict[str, str]:
    # one thread per rank: on 2 shared cores, two ranks with two threads each stall on each other
    return {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def _train_argv(config: DemoConfig, steps: int, learning_rate: float, checkpoints: int = 2, **fields) -> list[str]:
    """`mmpt train` of the shipped tiny config with `fields` overridden; `checkpoints` saved and kept
    (at least a mid-run one: an interrupted demo resumes from it)."""
    save_steps = max(1, steps // checkpoints)
    overrides = {
        **fields,
        "max_steps": steps,
        "save_steps": save_steps,
        "learning_rate": learning_rate,
        "min_learning_rate": learning_rate / 10,
        "per_device_batch_size": config.per_device_batch_size,
        "logging_steps": config.logging_steps,
        "seed": config.seed,  # one seed: the same row order in both further pre-trainings
        "keep_checkpoints": -(-steps // save_steps),  # all of them: the watch stage scores each
        "gradient_checkpointing": "false",
        "precision": "fp32",
    }
    return ["train", "--config", TRAIN_CONFIG, *(x for k, v in overrides.items() for x in (f"--{k}", str(v)))]


def _launch_stage(config: DemoConfig, name: str, title: str, launcher: Callable[[int, list[str]], list[str]],
                  commands: list[tuple[str, list[str]]], env: dict) -> Stage:  # fmt: skip
    """One launch of `config.ranks` ranks that run the `(name, mmpt argv)` commands in turn (`mmpt.demo.batch`)."""

    def run(log: Path) -> None:
        plan = config.out / "logs" / f"{name}.plan.json"
        done = config.out / "stages" / f"{name}.parts"  # the ranks' DONE.rank{r}.jsonl: a rerun skips what is in them
        write_json(plan, {"done": str(done), "commands": [{"name": n, "argv": a} for n, a in commands]})
        run_logged(name, launcher(config.ranks, ["mmpt.demo.batch", str(plan)]), log, env)

    return Stage(name, title, run)


def build_stages(config: DemoConfig) -> list[Stage]:
    """The demo's stages for `config`, in order."""
    p = Paths(config.out)
    env = _one_thread()

    def pairs(log: Path) -> None:
        summary = extract_pairs(list(config.sources), p.pairs, workers=config.ranks)
        print(f"{p.pairs}: {summary.render()}")
        log.write_text(summary.render() + "\n")

    def tokenizer(log: Path) -> None:
        tok = train_tokenizer(p.pairs, config.vocab_size, p.tokenizer)
        print(f"{p.tokenizer}: {len(tok)} tokens")

    def pack(separation: str) -> Callable[[Path], None]:
        def run(log: Path) -> None:
            meta = prepare(PrepareConfig(str(p.pairs), str(p.tokenizer), str(p.data[separation]), separation,
                                         max_seq_length=config.max_seq_length))  # fmt: skip
            shown = {k: meta[k] for k in ("instances", "dropped_too_long", "rows", "tokens", "separated_tokens")}
            other = p.data["none"] / "meta.json"
            if separation == "partial" and other.exists():
                # the two further pre-trainings must see the same rows in the same order; separation
                # changes ids, never lengths, so packing must have come out the same
                base = read_json(other, dict)
                if any(base[k] != meta[k] for k in ("instances", "rows", "tokens")):
                    raise ValueError(f"{p.data['partial']} and {p.data['none']} packed different rows")
            print(f"{p.data[separation]}: {shown}")
            write_json(log, shown, indent=None)

        return run

    training = [("train-backbone", _train_argv(
        config, config.backbone_steps, config.backbone_learning_rate,
        data_dir=p.data["none"], output_dir=p.backbone, objective="text-code-clm",
    ))]  # fmt: skip
    for model, separation in zip(MODELS, ("partial", "none")):
        training.append((f"train-{model}", _train_argv(
            config, config.further_steps, config.further_learning_rate, config.checkpoints,
            model=p.backbone / "final", data_dir=p.data[separation], output_dir=p.run[model], objective="code-clm",
        )))  # fmt: skip
    evaluation = [(f"generate-{m}-{kind}", _generate_argv(config, p, m, kind)) for m in MODELS for kind in KINDS]
    evaluation += [(f"score-{m}", _score_argv(p, m)) for m in MODELS]  # the reference NLL: a metric that is not 0
    return [
        Stage("pairs", f"extract NL→code pairs from {', '.join(config.sources)}", pairs),
        Stage("tokenizer", f"train a {config.vocab_size}-token byte-level BPE", tokenizer),
        Stage("prepare-none", "pack rows without separation", pack("none")),
        Stage("prepare-partial", "pack rows with partial separation (same tokenizer)", pack("partial")),
        _launch_stage(
            config, "train",
            f"pre-train the backbone from random init ({config.backbone_steps} steps, Text-Code CLM, no separation), "
            f"then further pre-train it twice ({config.further_steps} steps each, Code CLM): partial separation "
            "(separated) and none (baseline); one deepspeed launch",
            deepspeed, training, env,
        ),
        _watch_stage(config, p, env),
        _launch_stage(
            config, "generate",
            f"generate for HumanEval with both models ({_words(config)}) and score the reference solutions "
            "(NLL per code token); one torchrun launch",
            torchrun, evaluation, env,
        ),
        *(_execute_stage(config, p, m, kind, env) for m in MODELS for kind in KINDS),
        Stage("report", "write the report", lambda log: _report(config, p)),
    ]  # fmt: skip


def _words(config: DemoConfig) -> str:
    inc = "all" if config.incremental_limit is None else f"the first {config.incremental_limit}"
    return (f"greedy and {config.n_samples} samples at T={config.temperature} on {config.limit or 'all'} problems; "
            f"greedy on the incremental tasks of {inc}")  # fmt: skip


def _generate_argv(config: DemoConfig, p: Paths, model: str, kind: str) -> list[str]:
    # `--num-samples`, not `--n`: torchrun's own parser would take `--n` as an abbreviation of its `--nnodes`
    sampling = ["--num-samples", str(config.n_samples), "--temperature", str(config.temperature), "--top-p", str(config.top_p)]
    flags, limit = {
        "greedy": (["--greedy"], config.limit),
        "sampled": (sampling, config.limit),
        "incremental": (["--greedy", "--incremental"], config.incremental_limit),
    }[kind]
    argv = [
        "generate", "--model", str(p.run[model] / "final"), "--benchmark", "humaneval", *flags,
        "--max-new-tokens", str(config.max_new_tokens), "--batch-size", str(config.generate_batch_size),
        "--seed", str(config.seed), "--out", str(p.samples(model, kind)),
    ]  # fmt: skip
    return argv + (["--limit", str(limit)] if limit is not None else [])


def _score_argv(p: Paths, model: str) -> list[str]:
    # every problem: one forward pass each, cheap
    return ["score", "--model", str(p.run[model] / "final"), "--benchmark", "humaneval",
            "--out", str(p.score(model)), "--no-progress"]  # fmt: skip


def _watch_stage(config: DemoConfig, p: Paths, env: dict) -> Stage:
    """`mmpt watch` of both further pre-trainings, after them (a training job has it beside itself):
    greedy on the first `watch_limit` problems, so that it stays a small share of the demo's time."""

    def run(log: Path) -> None:
        cmd = [
            sys.executable, "-m", "mmpt", "watch", *(str(p.run[m]) for m in MODELS), "--benchmark", "humaneval",
            "--greedy", "--limit", str(config.watch_limit), "--max-new-tokens", str(config.max_new_tokens),
            "--batch-size", str(config.generate_batch_size), "--seed", str(config.seed),
            "--workers", str(config.execute_workers), "--sandbox", config.sandbox, "--poll-s", "1",
        ]  # fmt: skip
        run_logged("watch", cmd, log, env)

    title = (f"score each of the {config.checkpoints} checkpoints of both further pre-trainings with `mmpt watch` "
             f"(greedy, the first {config.watch_limit} HumanEval problems, sandboxed)")  # fmt: skip
    return Stage("watch", title, run)


def _execute_stage(config: DemoConfig, p: Paths, model: str, kind: str, env: dict) -> Stage:
    name = f"execute-{model}-{kind}"

    def run(log: Path) -> None:
        cmd = [
            sys.executable, "-m", "mmpt", "execute", "--benchmark", "humaneval", "--samples", str(p.samples(model, kind)),
            "--out", str(p.results(model, kind)), "--workers", str(config.execute_workers),
            "--timeout", str(config.execute_timeout), "--sandbox", config.sandbox,
        ]  # fmt: skip
        run_logged(name, cmd, log, env)

    return Stage(name, f"execute the {model} model's {kind} samples in the sandbox", run)


def _report(config: DemoConfig, p: Paths) -> None:
    path = write_report(config.out, settings=_settings(config))
    print(f"report: {path}")


def _settings(config: DemoConfig) -> dict:
    d = dataclasses.asdict(config)
    d["out"] = str(config.out)
    d["sources"] = list(config.sources)
    d["ks"] = list(config.ks)
    return d


# ---- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = command_parser(
        "mmpt demo",
        "The whole pipeline on a laptop CPU, stage by stage, resumable, ending in OUT/report.md. "
        f"Budget: {BUDGET_S / 60:.0f} minutes on 2 idle cores (bench/demo_time.py); it prints the time of each stage and the total.",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"a reduced run for tests and CI: tiny data, few steps and problems; budget {QUICK_BUDGET_S / 60:.0f} minutes on 2 idle cores",
    )
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="plain HumanEval problems (default: all 164)")
    ap.add_argument(
        "--incremental-limit",
        type=int,
        default=None,
        metavar="N",
        help=f"the first N problems are made incremental (default: {DemoConfig.incremental_limit})",
    )
    ap.add_argument("--backbone-steps", type=int, default=None, metavar="N", help="steps of the backbone's pre-training")
    ap.add_argument("--further-steps", type=int, default=None, metavar="N", help="steps of each further pre-training")
    ap.add_argument("--n-samples", type=int, default=None, metavar="N", help="sampled completions per problem")
    ap.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"), help="passed to `mmpt execute`")
    return ap


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The demo's typed config: the defaults (or --quick's), with the options given."""
    base = quick_config(args.out) if args.quick else DemoConfig(out=args.out)
    given = {
        "limit": args.limit,
        "incremental_limit": args.incremental_limit,
        "backbone_steps": args.backbone_steps,
        "further_steps": args.further_steps,
        "n_samples": args.n_samples,
    }
    return dataclasses.replace(base, sandbox=args.sandbox, **{k: v for k, v in given.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"mmpt demo: {e}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401 (the report's plots; checked now, not after the training stages)
    except ImportError:
        print("mmpt demo: the report's plots need matplotlib: pip install 'mmpt[demo]'", file=sys.stderr)
        return 2
    settings = config.out / "demo_config.json"
    config.out.mkdir(parents=True, exist_ok=True)
    if settings.exists() and read_json(settings, dict) != _settings(config):
        # finished stages would be skipped although they were made with other sizes
        print(f"mmpt demo: {config.out} holds a run made with other settings ({settings}); "
              "use another --out or delete it", file=sys.stderr)  # fmt: skip
        return 2
    write_json(settings, _settings(config))
    start = time.monotonic()
    try:
        run_stages(build_stages(config), config.out)
    except DemoError as e:
        print(f"\nmmpt demo: {e}", file=sys.stderr)
        return 1
    print(f"\n{timing_table(read_times(config.out))}")
    print(f"\nmmpt demo: finished in {clock(time.monotonic() - start)}; open {config.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
