"""`mmpt paper-table`: the paper's table of results from the authors' released checkpoints, in one command.

    mmpt paper-table huawei-noah/pycodegpt-CodeCLM-100m huawei-noah/pycodegpt-CodeCLM-partial-100m \\
        huawei-noah/pycodegpt-CodeCLM-full-100m huawei-noah/pangu-CodeCLM-300m \\
        huawei-noah/pangu-CodeCLM-partial-300m huawei-noah/pangu-CodeCLM-full-300m \\
        --out runs/paper-table [--reference published.csv] [--launcher slurm]

For each checkpoint (a hub name, or a folder: the authors' layout, or an mmpt checkpoint) it runs
`import-checkpoint`, then per benchmark (HumanEval, MBPP) `generate` → `execute` → pass@k under
prompt style `paper`, with the official settings (`mmpt.eval.styles.paper`): 200 samples at temperature
0.95, top-p 0.8, for pass@1/10/100; incremental tasks greedily for incremental pass@1 (macro and
micro), as the official README runs them; 1,024 ids, HumanEval-X's tests, 5 s per program. With
`--launcher slurm` each evaluation is a `sbatch --wait slurm/eval.sh` job (all submitted at once).
Everything lands in OUT/NAME/{model, BENCH, BENCH-incremental}; a rerun resumes.

The table is printed in the paper's layout, one row per backbone × separation. `--reference FILE`
(CSV or JSON; fields backbone, separation, benchmark, metric, value: the published figure in
percent, as the paper prints it) adds one line per published figure: ours, the difference, and a
95% Wilson interval of ours at the sample count used (pass@1: every sample a trial; pass@k for
k > 1 and micro figures: every problem a trial), with whether the published figure lies inside.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.eval import generate, passk
from mmpt.eval.problem_options import add_problem_options
from mmpt.eval.sandbox import execute
from mmpt.import_checkpoint import CheckpointImportError, import_checkpoint, resolve_source
from mmpt.jsonl import read_json, write_json
from mmpt.model.folder import CheckpointMeta

BENCHMARKS = ("humaneval", "mbpp")
BACKBONES = {"gpt_neo": "PyCodeGPT", "mmpt_pangu": "PanGu-Coder"}  # model_type → the paper's name
SEPARATIONS = ("none", "partial", "full")
INCREMENTAL = ("incremental-macro", "incremental-micro")  # pass@1 of the incremental tasks, greedy
REFERENCE_FIELDS = ("backbone", "separation", "benchmark", "metric", "value")
Z95 = 1.959963984540054


@dataclass(frozen=True)
class TableConfig:
    """One `mmpt paper-table` run."""

    sources: tuple[str, ...]  # hub names or folders
    out: Path
    n: int | None = None  # samples per task for pass@k (None: the official 200)
    greedy: bool = False  # pass@k greedily too (pass@1 only)
    ks: tuple[int, ...] = (1, 10, 100)
    limit: int | None = None  # first N problems of each benchmark
    max_new_tokens: int | None = None  # None: the official 1,024 ids in total
    workers: int = 2  # sandboxes of `mmpt execute`
    launcher: str = "local"  # local | slurm
    eval_script: Path = Path("slurm/eval.sh")


@dataclass(frozen=True)
class Evaluation:
    """One generate → execute → pass@k of one checkpoint on one benchmark."""

    model: Path
    benchmark: str
    incremental: bool
    out: Path  # holds samples.jsonl, results.jsonl, passk.json (as slurm/eval.sh writes them)

    def generate_args(self, config: TableConfig) -> list[str]:
        args = ["--model", str(self.model), "--benchmark", self.benchmark, "--prompt-style", "paper"]
        args += ["--incremental", "--greedy"] if self.incremental else (["--greedy"] if config.greedy else [])
        if config.n is not None and not self.incremental and not config.greedy:
            args += ["--n", str(config.n)]
        args += ["--limit", str(config.limit)] if config.limit is not None else []
        args += ["--max-new-tokens", str(config.max_new_tokens)] if config.max_new_tokens is not None else []
        return args

    def ks(self, config: TableConfig) -> list[int]:
        return [1] if self.incremental else list(config.ks)


def checkpoint_name(source: str) -> str:
    return Path(source.rstrip("/")).name


def import_one(source: str, out: Path) -> Path:
    """OUT/model: the checkpoint as mmpt's (imported once; an mmpt checkpoint folder is used as it is)."""
    folder = resolve_source(source)
    if (folder / "mmpt.json").exists():
        return folder
    model = out / "model"
    if not (model / "mmpt.json").exists():
        import_checkpoint(folder, model)
    return model


def run_local(evaluation: Evaluation, config: TableConfig) -> None:
    e = evaluation
    e.out.mkdir(parents=True, exist_ok=True)
    samples, results = e.out / "samples.jsonl", e.out / "results.jsonl"
    if generate.main([*e.generate_args(config), "--no-progress", "--out", str(samples)]) != 0:
        raise RuntimeError(f"generate failed for {e.model} on {e.benchmark}")
    args = ["--benchmark", e.benchmark, "--samples", str(samples), "--out", str(results), "--workers", str(config.workers)]
    if execute.main(args) != 0:
        raise RuntimeError(f"execute failed for {e.model} on {e.benchmark}")
    write_json(e.out / "passk.json", passk.pass_at_k_metrics(passk.read_results(results), e.ks(config)))


def run_slurm(evaluation: Evaluation, config: TableConfig) -> None:
    """`sbatch --wait slurm/eval.sh ...`: generate, execute and pass@k as one job; waits for it."""
    e = evaluation
    env = "ALL,K=" + ",".join(map(str, e.ks(config)))
    command = ["sbatch", "--wait", "--parsable", f"--export={env}", str(config.eval_script), *e.generate_args(config),
               "--out", str(e.out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")


def evaluate(config: TableConfig) -> list[dict]:
    """Every checkpoint of `config`, imported and evaluated: one row per checkpoint."""
    rows, evaluations = [], []
    for source in config.sources:
        out = config.out / checkpoint_name(source)
        model = import_one(source, out)
        meta = CheckpointMeta.load(model)
        model_type = read_json(model / "config.json", dict).get("model_type", "?")
        rows.append({"source": source, "model": model, "backbone": BACKBONES.get(model_type, model_type),
                     "separation": meta.separation, "dir": out})  # fmt: skip
        for benchmark in BENCHMARKS:
            for incremental in (False, True):
                folder = out / (benchmark + ("-incremental" if incremental else ""))
                evaluations.append(Evaluation(model, benchmark, incremental, folder))
    if config.launcher == "slurm":
        with ThreadPoolExecutor(max_workers=len(evaluations)) as pool:
            list(pool.map(lambda e: run_slurm(e, config), evaluations))
    else:
        for e in evaluations:
            run_local(e, config)
    for row in rows:
        row["metrics"] = {}
        for benchmark in BENCHMARKS:
            plain = read_json(row["dir"] / benchmark / "passk.json", dict)
            incremental = read_json(row["dir"] / f"{benchmark}-incremental" / "passk.json", dict)
            for k in config.ks:
                if f"pass@{k}" in plain:
                    trials = plain["n_samples"] if k == 1 else plain["n_tasks"]
                    row["metrics"][(benchmark, f"pass@{k}")] = (plain[f"pass@{k}"], trials)
            macro, micro = incremental["incremental_macro"], incremental["incremental_micro"]
            row["metrics"][(benchmark, "incremental-macro pass@1")] = (macro["pass@1"], incremental["n_samples"])
            row["metrics"][(benchmark, "incremental-micro pass@1")] = (micro["pass@1"], micro["n_problems"])
    return sorted(
        rows, key=lambda r: (r["backbone"], SEPARATIONS.index(r["separation"]) if r["separation"] in SEPARATIONS else 9)
    )


# --- printing ---------------------------------------------------------------------------------


def columns(config: TableConfig) -> list[tuple[str, str]]:
    """(benchmark, metric) per column, in the paper's order: pass@k, then incremental pass@1."""
    plain = [(b, f"pass@{k}") for b in BENCHMARKS for k in config.ks if not (config.greedy and k > 1)]
    return plain + [(b, f"{m} pass@1") for b in BENCHMARKS for m in INCREMENTAL]


def format_table(rows: list[dict], config: TableConfig) -> str:
    """The table in percent, one row per backbone × separation."""
    cols = columns(config)
    names = {"humaneval": "HumanEval", "mbpp": "MBPP"}
    header = ["backbone", "separation"] + [f"{names[b]} {m.replace('incremental-', 'incr. ')}" for b, m in cols]
    body = [
        [r["backbone"], r["separation"]] + [f"{100 * r['metrics'][c][0]:.2f}" if c in r["metrics"] else "-" for c in cols]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [header, *body])


def wilson(p: float, trials: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion `p` observed over `trials` trials."""
    if trials <= 0:
        return 0.0, 1.0
    centre = (p + Z95**2 / (2 * trials)) / (1 + Z95**2 / trials)
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / (1 + Z95**2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def read_reference(path: Path) -> list[dict]:
    """Published figures: CSV (a header row) or JSON (a list of objects), fields REFERENCE_FIELDS."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the reference file ({e.strerror})") from None
    if path.suffix.lower() == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of objects with fields {list(REFERENCE_FIELDS)}")
        where = [f"{path}: entry {i}" for i in range(len(entries))]
    else:
        entries = list(csv.DictReader(text.splitlines()))
        where = [f"{path}:{i + 2}" for i in range(len(entries))]
    known = {f"pass@{k}" for k in (1, 10, 100)} | {f"{m} pass@1" for m in INCREMENTAL}
    out = []
    for w, entry in zip(where, entries):
        if not isinstance(entry, dict) or any(entry.get(f) in (None, "") for f in REFERENCE_FIELDS):
            raise ValueError(f"{w}: needs the fields {list(REFERENCE_FIELDS)}")
        if entry["benchmark"] not in BENCHMARKS or entry["separation"] not in SEPARATIONS or entry["metric"] not in known:
            raise ValueError(
                f"{w}: benchmark must be one of {list(BENCHMARKS)}, separation one of {list(SEPARATIONS)}, "
                f"metric one of {sorted(known)}; got {entry['benchmark']!r}, {entry['separation']!r}, {entry['metric']!r}"
            )
        try:
            value = float(entry["value"])
        except (TypeError, ValueError):
            raise ValueError(f"{w}: field 'value' must be a number (percent), got {entry['value']!r}") from None
        out.append({**{f: str(entry[f]) for f in REFERENCE_FIELDS[:4]}, "value": value})
    return out


def format_comparison(rows: list[dict], reference: list[dict]) -> str:
    """One line per published figure: ours, the difference, our 95% interval at the samples used."""
    by_key = {(r["backbone"], r["separation"]): r for r in rows}
    lines = [
        "backbone     separation  benchmark  metric                       published    ours    diff  ours' 95% interval  inside"
    ]
    for ref in reference:
        row = by_key.get((ref["backbone"], ref["separation"]))
        figure = row["metrics"].get((ref["benchmark"], ref["metric"])) if row else None
        head = f"{ref['backbone']:<12} {ref['separation']:<11} {ref['benchmark']:<10} {ref['metric']:<28} {ref['value']:9.2f}"
        if figure is None:
            lines.append(f"{head}  (not evaluated here)")
            continue
        ours, trials = figure
        lo, hi = wilson(ours, trials)
        inside = "yes" if 100 * lo <= ref["value"] <= 100 * hi else "no"
        lines.append(
            f"{head} {100 * ours:7.2f} {100 * ours - ref['value']:+7.2f}  [{100 * lo:6.2f}, {100 * hi:6.2f}] n={trials:<6} {inside}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[TableConfig, Path | None]:
    ap = command_parser("mmpt paper-table", "Evaluate the authors' checkpoints and print the paper's table of pass@k.")
    ap.add_argument("sources", nargs="+", help="hub names (huawei-noah/...) or checkpoint folders")
    ap.add_argument("--out", type=Path, required=True, help="folder for the imports, samples, results (a rerun resumes)")
    ap.add_argument("--reference", type=Path, default=None, help="published figures (CSV/JSON) to print ours beside")
    ap.add_argument("--n", type=int, default=None, help="samples per task for pass@k (default: the official 200)")
    ap.add_argument("--greedy", action="store_true", help="pass@k greedily too (pass@1 only; not the official setting)")
    ap.add_argument("--k", default="1,10,100", help="ks of pass@k")
    add_problem_options(ap, only=("limit",))  # of each benchmark (not the official setting)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the official 1,024 ids in total")
    ap.add_argument("--workers", type=int, default=2, help="sandboxes of mmpt execute (local launcher)")
    ap.add_argument(
        "--launcher", choices=("local", "slurm"), default="local", help="slurm: one sbatch --wait of slurm/eval.sh per evaluation"
    )
    ap.add_argument("--eval-script", type=Path, default=Path("slurm/eval.sh"), help="the Slurm script (--launcher slurm)")
    a = ap.parse_args(argv)
    try:
        ks = tuple(sorted({int(k) for k in a.k.split(",")}))
    except ValueError:
        ap.error(f"--k must be comma-separated integers, got {a.k!r}")
    config = TableConfig(tuple(a.sources), a.out, a.n, a.greedy, ks, a.limit, a.max_new_tokens, a.workers, a.launcher,
                         a.eval_script)  # fmt: skip
    return config, a.reference


def main(argv: list[str] | None = None) -> int:
    config, reference_file = parse_args(argv)
    try:
        reference = read_reference(reference_file) if reference_file else []
        rows = evaluate(config)
    except (CheckpointImportError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"mmpt paper-table: {e}", file=sys.stderr)
        return 2
    table = format_table(rows, config)
    print(table)
    (config.out / "table.txt").write_text(table + "\n")
    if reference:
        comparison = format_comparison(rows, reference)
        print("\n" + comparison)
        (config.out / "comparison.txt").write_text(comparison + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
