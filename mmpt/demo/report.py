"""The demo's report: pass@k, incremental pass@k, loss per modality and NL/code embedding similarity.

    mmpt report runs/demo          # (re)writes runs/demo/report.md and its PNGs

Reads what the demo's stages wrote under OUT — each training run's `train_config.yaml`,
`metrics.jsonl`, TensorBoard events and exported model, `mmpt execute` results, the prepared data's
meta.json, the stage timings — and writes OUT/report.md with markdown tables and PNG plots
(OUT/plots/*.png, `mmpt.demo.plots`) comparing the separated model with the baseline. Every word
about what ran (architecture, objectives, separation, ZeRO stage, problem counts, fraction bins)
comes from those files; pass@k comes from `mmpt.eval.passk`, the project's one estimator.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from safetensors import safe_open

from mmpt.cli import command_parser
from mmpt.config import ConfigError, find_deepspeed_file
from mmpt.data.separation import SeparationMap
from mmpt.demo.layout import KINDS, MODELS, Paths
from mmpt.demo.plots import fraction_label, plot_incremental, plot_loss, plot_passk, plot_similarity, plot_watch
from mmpt.demo.timing import PART, clock, read_times
from mmpt.eval import score_stats, watch_records
from mmpt.eval.benchmarks import humaneval
from mmpt.eval.passk import FRACTION_BINS, bin_name, fraction_bin, pass_at_k_metrics, read_results
from mmpt.eval.sandbox.execute import OUTCOMES, outcome
from mmpt.jsonl import read_json, read_jsonl

SIMILARITY_TAG = "embeddings/nl_code_cosine"  # written by mmpt.metrics.MetricsLog.similarity
NEAR_ZERO = 0.02  # a pass rate this low is "near zero" in the prose


# ---- inputs -------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict]:
    """The records of a training run's metrics.jsonl, by step (a resumed run's repeats: last wins)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training metrics (did the training stage run?)")
    by_step: dict[int, dict] = {}
    for number, record in read_jsonl(path, skip_torn_tail=True):
        try:
            by_step[int(record["step"])] = record
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{number}: not a metrics record ({e})") from None
    return [by_step[s] for s in sorted(by_step)]


@dataclass
class SimilarityCurve:
    """NL/code cosine of the separated tokens over training: per logged step, mean and range."""

    steps: list[int]
    mean: list[float]
    low: list[float]  # smallest cosine over the tokens
    high: list[float]


def read_similarity(tensorboard_dir: Path) -> SimilarityCurve:
    """The cosine histograms that training logged to TensorBoard, as a curve."""
    from tensorboard.backend.event_processing.event_accumulator import (
        HISTOGRAMS,
        EventAccumulator,
    )

    if not tensorboard_dir.is_dir():
        raise FileNotFoundError(f"{tensorboard_dir}: no TensorBoard events")
    events = EventAccumulator(str(tensorboard_dir), size_guidance={HISTOGRAMS: 0})
    events.Reload()
    if SIMILARITY_TAG not in events.Tags().get("histograms", []):
        raise ValueError(f"{tensorboard_dir}: no {SIMILARITY_TAG!r} histograms (was the run separated?)")
    by_step = {e.step: e.histogram_value for e in events.Histograms(SIMILARITY_TAG)}
    steps = sorted(by_step)
    hist = [by_step[s] for s in steps]
    return SimilarityCurve(steps, [h.sum / h.num for h in hist], [h.min for h in hist], [h.max for h in hist])


def final_similarity(model_dir: Path) -> list[tuple[str, float]]:
    """(token, cosine of its NL row and code copy) for every separated token of a checkpoint, lowest first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    smap = SeparationMap.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [tokenizer.decode([i]) for i in smap.separated]  # " is", not the BPE's "Ġis"
    weight = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight.detach()  # (V, H)
    nl = weight[torch.as_tensor(smap.separated, dtype=torch.long)]  # (S, H)
    code = weight[smap.base_vocab_size : smap.vocab_size]  # (S, H): copy i belongs to separated[i]
    cos = torch.nn.functional.cosine_similarity(nl, code, dim=-1).tolist()
    return sorted(zip(texts, cos), key=lambda tc: tc[1])


def count_parameters(model_dir: Path) -> int:
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                total += math.prod(f.get_slice(key).get_shape())
    return total


@dataclass(frozen=True)
class RunInfo:
    """What one training run of the demo was, from its own files."""

    objective: str  # from OUT/RUN/train_config.yaml
    zero_stage: int | None  # of its DeepSpeed JSON (None when the JSON cannot be found any more)
    separation: str  # of its exported model's separation.json
    model_type: str  # of its exported model's config.json
    parameters: int


def read_run(run_dir: Path) -> RunInfo:
    """The objective, ZeRO stage, separation, architecture and size of the training run in `run_dir`."""
    config_path, final = run_dir / "train_config.yaml", run_dir / "final"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: missing (did the training stage finish?)")
    config = yaml.safe_load(config_path.read_text()) or {}
    try:
        stage = read_json(find_deepspeed_file(config["deepspeed"]), dict)["zero_optimization"]["stage"]
    except (ConfigError, KeyError, ValueError):
        stage = None
    model_type = read_json(final / "config.json", dict)["model_type"]
    smap = SeparationMap.load_or_none(final, base_vocab_size=0)
    return RunInfo(config["objective"], stage, smap.separation, model_type, count_parameters(final))


def objective_name(objective: str) -> str:
    """How the paper writes an objective id: "text-code-clm" -> "Text-Code CLM"."""
    *words, last = objective.split("-")
    return "-".join(w.capitalize() for w in words) + " " + last.upper()


def separation_words(separation: str) -> str:
    """ "partial separation", or "no separation" for none."""
    return "no separation" if separation == "none" else f"{separation} separation"


def model_labels(runs: dict[str, RunInfo]) -> dict[str, str]:
    """{model: "separated (partial, Code CLM)"}, the legend and table label of each compared model."""
    return {m: f"{m} ({runs[m].separation}, {objective_name(runs[m].objective)})" for m in MODELS}


def parse_rate_by_fraction(results: list[dict]) -> dict[str, float]:
    """{fraction bin: share of completions that parse (they run, whatever the tests say)}, plus "all"."""
    groups: dict[str, list[bool]] = {}
    for r in results:
        ok = outcome(r) != "does not parse"
        groups.setdefault(fraction_bin(r) or "none", []).append(ok)
        groups.setdefault("all", []).append(ok)
    return {b: sum(v) / len(v) for b, v in groups.items()}


def benchmark_size() -> int:
    """Problems in HumanEval (the demo's benchmark), from the data that `mmpt generate` reads."""
    return len(humaneval.problems())


def sign_test_p(b: int, c: int) -> float:
    """Two-sided exact p-value that b vs c discordant tasks (one model passes, the other not) are a coin flip."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def incremental_subset_words(problems: set[str], total: int) -> str:
    """Which of the benchmark's `total` problems the incremental tasks come from, in words (the demo
    takes the first N, `--incremental-limit`)."""
    n = len(problems)
    if n >= total:
        return f"all {total} problems"
    if problems == {f"HumanEval/{i}" for i in range(n)}:
        return (f"the first {n} of the {total} problems (HumanEval/0 to HumanEval/{n - 1}: a fixed subset, the "
                "demo's `--incremental-limit`, which keeps it within its time)")  # fmt: skip
    shown = sorted(problems)
    return f"{n} of the {total} problems ({', '.join(shown[:5])}{', ...' if n > 5 else ''})"


def timing_table(times: list[tuple[str, float, float | None]]) -> str:
    """The markdown table of `read_times`, with the total wall time of the stages."""
    rows = [[name, f"{s:.0f}", "–" if c is None else f"{c:.0f}"] for name, s, c in times]
    total = sum(s for name, s, _ in times if not name.startswith(PART))
    total_cpu = sum(c or 0.0 for name, _, c in times if not name.startswith(PART))
    rows.append(["**total**", f"**{total:.0f}** ({clock(total)})", f"{total_cpu:.0f}"])
    return "\n".join([
        _table(["stage", "wall seconds", "CPU seconds"], rows), "",
        "CPU seconds: user + system of the processes a stage waited for (for a launch's commands, of its "
        "ranks; the sandbox's checkers are not among them), so that a run on a busy machine can be compared "
        "with one on an idle machine. The commands of a launch add up to less than the launch, which also "
        "starts and stops the ranks.",
    ])  # fmt: skip


# ---- the report ---------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows])


def _top_words() -> str:
    """The last fraction bin, in words: "75% or more"."""
    top_lo = FRACTION_BINS[-1][0]
    return f"{100 * top_lo:.0f}% or more" if top_lo > 0 else "any part"


def _first_last(records: list[dict], key: str) -> tuple[float, float] | None:
    values = [r[key] for r in records if key in r]
    return (values[0], values[-1]) if values else None


def _passed_tasks(results: list[dict]) -> set[str]:
    return {r["task_id"] for r in results if r["passed"]}


def _example(results: list[dict]) -> dict | None:
    """A passing incremental sample that had to write something: the one given the least."""
    passed = [r for r in results if r["passed"] and r.get("generated", "").strip()]
    return min(passed, key=lambda r: (r.get("given_lines", 0) / max(r.get("total_lines", 1), 1), r["task_id"]), default=None)


def watch_section(out: Path, labels: dict[str, str], plots: Path, times: list[tuple[str, float, float | None]]) -> list[str]:
    """pass@1 at every checkpoint of the further pre-trainings, as `mmpt watch` scored them, and what
    it cost; nothing when the demo had no watch stage."""
    p = Paths(out)
    scores = {m: watch_records.read_scores(p.run[m], "humaneval") for m in MODELS}
    if not all(scores.values()):
        return []
    curves = {}
    for m in MODELS:
        curves[m] = []
        for record in scores[m]:
            results = read_results(
                watch_records.watch_folder(p.run[m], "humaneval") / record["checkpoint"] / "plain.results.jsonl"
            )
            parses = sum(outcome(r) != "does not parse" for r in results) / len(results)
            curves[m].append({"step": record["step"], "pass@1": record["pass@1"], "parses": parses})
    n_tasks = scores["separated"][0]["n_tasks"]
    plot_watch(curves, labels, f"HumanEval pass@1 (greedy, {n_tasks} problems)", plots / "watch.png")
    steps = sorted({pt["step"] for m in MODELS for pt in curves[m]})
    cell = {(m, pt["step"]): pt for m in MODELS for pt in curves[m]}
    rows = [[str(step)] + [_pct(cell[(m, step)]["pass@1"]) if (m, step) in cell else "–" for m in MODELS]
            + [_pct(cell[(m, step)]["parses"]) if (m, step) in cell else "–" for m in MODELS] for step in steps]  # fmt: skip
    stage = {name: (s, c) for name, s, c in times}.get("watch")
    total = sum(s for name, s, _ in times if not name.startswith(PART))
    per_checkpoint = [r["seconds"]["total"] for m in MODELS for r in scores[m] if "total" in r.get("seconds", {})]
    cost = ""
    if stage is not None:
        cost = (f"The stage took {stage[0]:.0f} s ({100 * stage[0] / total:.0f}% of the demo's wall time"
                + (f", {stage[1]:.0f} CPU-seconds" if stage[1] is not None else "") + ")")  # fmt: skip
        if per_checkpoint:
            cost += f", {sum(per_checkpoint) / len(per_checkpoint):.1f} s per checkpoint; the rest is starting torch, transformers and DeepSpeed once"
        cost += ". "
    if max(pt["pass@1"] for m in MODELS for pt in curves[m]) == 0:
        moved = ", ".join(f"{_pct(curves[m][0]['parses'])} → {_pct(curves[m][-1]['parses'])} ({m})" for m in MODELS)
        finding = f"pass@1 is 0 at every checkpoint of both models; the share of completions that parse, first to last checkpoint: {moved}."
    else:
        finding = ", ".join(f"{_pct(curves[m][0]['pass@1'])} → {_pct(curves[m][-1]['pass@1'])} ({m})" for m in MODELS)
        finding = f"pass@1 from the first checkpoint to the last: {finding}."
    return [
        "## pass@1 as the models train (`mmpt watch`)",
        "",
        (
            f"Each further pre-training saved {len(scores['separated'])} checkpoints; `mmpt watch` scored every one "
            f"(Hugging Face export, greedy generation for the first {n_tasks} HumanEval problems, execution in the "
            "sandbox, pass@1) and wrote `eval/humaneval/pass@1` into the run's TensorBoard at the checkpoint's step "
            "(`tensorboard --logdir OUT/separated`, run `tensorboard/watch-humaneval`). On a cluster it is a job of "
            "its own beside the training (`sbatch slurm/watch.sh`) and scores each checkpoint as it appears; here it "
            f"ran once both trainings were done. {cost}{finding}"
        ),
        "",
        _table(["step"] + [f"{m} pass@1" for m in MODELS] + [f"{m} parses" for m in MODELS], rows),
        "",
        "![pass@1 by checkpoint](plots/watch.png)",
        "",
    ]


@dataclass
class DemoRun:
    """What the report says of a demo run, read from its files (`read_demo_run`)."""

    out: Path
    settings: dict  # OUT/demo_config.json: the sizes the demo ran with
    runs: dict[str, RunInfo]  # backbone, separated, baseline
    labels: dict[str, str]  # model -> its legend and table label
    backbone: list[dict]  # the backbone's metrics.jsonl records
    further: dict[str, list[dict]]  # model -> its metrics.jsonl records
    results: dict[str, dict[str, list[dict]]]  # model -> kind -> `mmpt execute` results
    plain: dict[str, dict[str, dict]]  # model -> greedy|sampled -> pass@k metrics of the plain tasks
    incremental: dict[str, dict]  # model -> incremental pass@1 metrics (by fraction bin too)
    parse_rates: dict[str, dict[str, float]]  # model -> fraction bin -> share of incremental completions that parse
    data_meta: dict[str, dict]  # separation -> the prepared data's meta.json
    times: list[tuple[str, float, float | None]]  # `read_times`
    curve: SimilarityCurve  # the separated model's NL/code cosine over training
    final: list[tuple[str, float]]  # the separated model's cosine per token at the end, lowest first
    n_problems: int  # HumanEval's problems

    @property
    def ks(self) -> list[int]:
        return [int(k) for k in self.settings["ks"]]

    @property
    def separation(self) -> str:
        return self.runs["separated"].separation

    @property
    def further_objective(self) -> str:
        """The further pre-trainings' objective in the paper's words ("A vs B" when they differ)."""
        if self.runs["baseline"].objective != self.runs["separated"].objective:
            return " vs ".join(objective_name(self.runs[m].objective) for m in MODELS)
        return objective_name(self.runs["separated"].objective)

    @property
    def columns(self) -> list[tuple[str, str, str]]:
        """(label, kind, metric key) of the plain pass@k columns: greedy pass@1, then sampled pass@k."""
        return [("greedy pass@1", "greedy", "pass@1")] + [(f"sampled pass@{k}", "sampled", f"pass@{k}") for k in self.ks]

    @property
    def n_inc_tasks(self) -> int:
        return self.incremental["separated"]["n_tasks"]

    @property
    def inc_subset(self) -> str:
        """Which problems the incremental tasks come from, in words."""
        problems = {r["task_id"].split("#")[0] for r in self.results["separated"]["incremental"]}
        return incremental_subset_words(problems, self.n_problems)


def read_demo_run(out: Path, settings: dict | None = None) -> DemoRun:
    """Everything the report needs from a demo run folder: each training run, its metrics, the
    results and their pass@k, the data meta, the stage times, the similarities."""
    if settings is None:
        settings_path = out / "demo_config.json"
        if not settings_path.exists():
            raise FileNotFoundError(f"{settings_path}: missing; {out} is not a demo run folder")
        settings = read_json(settings_path, dict)
    ks = [int(k) for k in settings["ks"]]
    p = Paths(out)
    runs = {"backbone": read_run(p.backbone), **{m: read_run(p.run[m]) for m in MODELS}}
    results = {m: {k: read_results(p.results(m, k)) for k in KINDS} for m in MODELS}
    plain = {
        m: {"greedy": pass_at_k_metrics(results[m]["greedy"], [1]), "sampled": pass_at_k_metrics(results[m]["sampled"], ks)}
        for m in MODELS
    }
    return DemoRun(
        out=out,
        settings=settings,
        runs=runs,
        labels=model_labels(runs),
        backbone=read_metrics(p.backbone / "metrics.jsonl"),
        further={m: read_metrics(p.run[m] / "metrics.jsonl") for m in MODELS},
        results=results,
        plain=plain,
        incremental={m: pass_at_k_metrics(results[m]["incremental"], [1]) for m in MODELS},
        parse_rates={m: parse_rate_by_fraction(results[m]["incremental"]) for m in MODELS},
        data_meta={s: read_json(p.data[s] / "meta.json", dict) for s in p.data},
        times=read_times(out),
        curve=read_similarity(p.run["separated"] / "tensorboard"),
        final=final_similarity(p.run["separated"] / "final"),
        n_problems=benchmark_size(),
    )


def write_plots(run: DemoRun, plots: Path) -> None:
    """The report's PNGs of pass@k, incremental pass@1, the losses and the similarity (`mmpt.demo.plots`)."""
    plot_passk(run.plain, run.columns, run.labels, "HumanEval, plain tasks", plots / "passk.png")
    plot_incremental(run.incremental, run.parse_rates, run.labels, plots / "incremental.png")
    loss_titles = (f"backbone pre-training ({objective_name(run.runs['backbone'].objective)})",
                   f"further pre-training ({run.further_objective}: code loss)")  # fmt: skip
    plot_loss(run.backbone, run.further, run.labels, loss_titles, plots / "loss.png")
    plot_similarity(run.curve, run.final, plots / "similarity.png")


def what_ran_section(run: DemoRun) -> list[str]:
    """The data, the backbone, the two further pre-trainings and the evaluation, from the run's own files."""
    settings, runs, data_meta, separation = run.settings, run.runs, run.data_meta, run.separation
    zero = sorted({f"ZeRO-{r.zero_stage}" for r in runs.values() if r.zero_stage is not None}) or ["(ZeRO stage unknown)"]
    tokens_per_step = settings["per_device_batch_size"] * settings["max_seq_length"] * settings["ranks"]
    sources = ", ".join(Path(s).name for s in settings["sources"])
    n_plain = run.plain["separated"]["greedy"]["n_tasks"]
    return [
        "## What ran",
        "",
        (
            f"- Data: {data_meta['none']['pairs']} docstring/code pairs mined from {sources}; "
            f"{data_meta['none']['instances']} instances ≤ {settings['max_seq_length']} tokens "
            f"({data_meta['none']['tokens']:,} tokens in {data_meta['none']['rows']} packed rows), "
            f"a {settings['vocab_size']}-token byte-level BPE."
        ),
        (
            f"- {separation.capitalize()} separation gave {data_meta[separation]['separated_tokens']} Python tokens "
            f"a second, code-only embedding row; the baseline ({separation_words(runs['baseline'].separation)}) keeps one "
            "row per token."
        ),
        (
            f"- Backbone: a {runs['backbone'].parameters / 1e6:.2f}M-parameter `{runs['backbone'].model_type}` model "
            f"trained from random init for {settings['backbone_steps']} steps ({objective_name(runs['backbone'].objective)}, "
            f"{separation_words(runs['backbone'].separation)}) — the stand-in for an already pre-trained model."
        ),
        (
            f"- Further pre-training of that backbone, {settings['further_steps']} steps each, same data order, "
            f"{run.further_objective}: **separated** ({separation_words(separation)}, "
            f"{runs['separated'].parameters / 1e6:.2f}M parameters) "
            f"and **baseline** ({separation_words(runs['baseline'].separation)}). Every step is {settings['ranks']} DeepSpeed "
            f"{'/'.join(zero)} ranks × {settings['per_device_batch_size']} rows of ≤ {settings['max_seq_length']} tokens "
            f"(~{tokens_per_step:,} tokens)."
        ),
        (
            f"- HumanEval: {n_plain} of {run.n_problems} problems plain (greedy, and {settings['n_samples']} samples at "
            f"T={settings['temperature']}, top-p {settings['top_p']}); {run.inc_subset} made into "
            f"{run.n_inc_tasks} incremental tasks (greedy); at most {settings['max_new_tokens']} new tokens; "
            "executed in the sandbox."
        ),
        "",
    ]


def headline_section(run: DemoRun) -> list[str]:
    """In short: what plain and incremental pass@k say about the two models, with the sign test."""
    ks, plain, incremental, results = run.ks, run.plain, run.incremental, run.results
    seconds = {name: t for name, t, _ in run.times}
    seen = run.backbone[-1].get("tokens_seen", 0) + run.further["separated"][-1].get("tokens_seen", 0)
    train_minutes = sum(seconds.get(PART + k, 0.0) for k in ("train-backbone", "train-separated")) / 60
    sources = ", ".join(Path(s).name for s in run.settings["sources"])
    best_plain = max(plain[m]["sampled"].get(f"pass@{ks[-1]}", 0.0) for m in MODELS)
    md = ["## In short", ""]
    if best_plain <= NEAR_ZERO:
        md.append(
            f"Plain HumanEval does not tell these models apart: both score near zero (best pass@{ks[-1]} "
            f"{_pct(best_plain)}). That is the honest result for a ~{run.runs['baseline'].parameters / 1e6:.0f}M-parameter model "
            f"that saw {seen:,} tokens of code mined from {sources} in {train_minutes:.0f} minutes of training — it has "
            "learnt Python's surface, not how to solve programming problems."
        )
    else:
        md.append(f"On plain HumanEval the best pass@{ks[-1]} is {_pct(best_plain)}.")
    inc = {m: incremental[m].get("pass@1", 0.0) for m in MODELS}
    passed = {m: _passed_tasks(results[m]["incremental"]) for m in MODELS}
    only_sep, only_base = len(passed["separated"] - passed["baseline"]), len(passed["baseline"] - passed["separated"])
    p_value = sign_test_p(only_sep, only_base)
    top_bin = bin_name(*FRACTION_BINS[-1])
    top = {m: incremental[m].get("by_fraction", {}).get(top_bin, {}).get("pass@1") for m in MODELS}
    md.append("")
    counts = (
        f"{only_sep} tasks pass only with the separated model and {only_base} only with the baseline "
        f"(exact sign test p = {p_value:.2f}"
        + ("; a difference this size is within noise at this scale)." if p_value >= 0.05 else ").")
    )
    if not passed["separated"] and not passed["baseline"]:
        md.append(
            f"Even incremental pass@1 — finishing a partly written reference solution — is zero for both models "
            f"over {run.n_inc_tasks} tasks: this run is too small to show a difference between them."
        )
    else:
        md.append(
            f"Incremental pass@1 — finishing a partly written reference solution — is where the models do score: "
            f"{_pct(inc['separated'])} (separated) vs {_pct(inc['baseline'])} (baseline) over {run.n_inc_tasks} tasks, "
            f"and {_pct(top['separated'])} vs {_pct(top['baseline'])} when {_top_words()} of the body is given. " + counts
        )
    md.append("")
    return md


def passk_section(run: DemoRun) -> list[str]:
    """pass@k of the plain tasks, greedy and sampled."""
    rows = [[run.labels[m]] + [_pct(run.plain[m][kind].get(key)) for _, kind, key in run.columns] for m in MODELS]
    return [
        "## pass@k on HumanEval (plain tasks)",
        "",
        _table(["model"] + [label for label, _, _ in run.columns], rows),
        "",
        (
            f"pass@k is the unbiased estimator over {run.settings['n_samples']} samples per problem; greedy pass@1 is "
            "the share of problems whose one greedy completion passes every test."
        ),
        "",
        "![pass@k](plots/passk.png)",
        "",
    ]


def incremental_section(run: DemoRun) -> list[str]:
    """Incremental pass@1 by fraction of the body given, the share that parses, and a task each model finished."""
    incremental, parse_rates = run.incremental, run.parse_rates
    top_bin = bin_name(*FRACTION_BINS[-1])
    rows = []
    for lo, hi in FRACTION_BINS:
        cells = [incremental[m].get("by_fraction", {}).get(bin_name(lo, hi), {}) for m in MODELS]
        n = max((c.get("n_tasks", 0) for c in cells), default=0)
        rows.append([fraction_label(lo, hi)] + [_pct(c.get("pass@1")) for c in cells] + [str(n)])
    rows.append(["all"] + [_pct(incremental[m].get("pass@1")) for m in MODELS] + [str(run.n_inc_tasks)])
    md = [
        "## Incremental pass@1 by fraction of the solution given",
        "",
        (
            "Task t_i of a problem gives the first i non-empty lines of the reference body as already written "
            "and asks for the rest (t_0 is the plain task). Tasks are grouped by i / L, L the body's non-empty lines. "
            f"The tasks are those of {run.inc_subset}."
        ),
        "",
        _table(["fraction given", *(run.labels[m] for m in MODELS), "tasks"], rows),
        "",
        (
            f"Completions that at least parse (and so run to the tests): {_pct(parse_rates['separated']['all'])} "
            f"(separated) vs {_pct(parse_rates['baseline']['all'])} (baseline) over all tasks; "
            f"{_pct(parse_rates['separated'].get(top_bin))} vs {_pct(parse_rates['baseline'].get(top_bin))} "
            f"with {_top_words()} of the body given."
        ),
        "",
        "![incremental pass@1](plots/incremental.png)",
        "",
    ]
    for m in MODELS:
        ex = _example(run.results[m]["incremental"])
        if ex:
            md += [
                (
                    f"A task the {m} model finished ({ex['task_id']}, {ex['given_lines']} of {ex['total_lines']} lines "
                    "given); the model wrote:"
                ),
                "",
                "```python",
                ex["generated"].rstrip("\n"),
                "```",
                "",
            ]
    return md


def outcomes_section(run: DemoRun) -> list[str]:
    """How the completions fail: what a near-zero pass rate is made of."""
    rows = []
    for m in MODELS:
        for kind in ("sampled", "incremental"):
            found = [outcome(r) for r in run.results[m][kind]]
            rows.append([m, kind] + [_pct(found.count(o) / len(found)) for o in OUTCOMES] + [str(len(found))])
    return [
        "## How the completions fail",
        "",
        (
            "A low pass rate hides what the models did learn: whether their code even parses, runs, and "
            'reaches the tests\' assertions ("wrong answer").'
        ),
        "",
        _table(["model", "samples"] + list(OUTCOMES) + ["completions"], rows),
        "",
    ]


def loss_section(run: DemoRun) -> list[str]:
    """The first and last logged loss per modality of every training run."""
    rows = []
    for name, records, key in (
        ("backbone", run.backbone, "loss_nl"),
        ("backbone", run.backbone, "loss_code"),
        *((m, run.further[m], key) for m in MODELS for key in ("loss_nl", "loss_code")),
    ):
        fl = _first_last(records, key)
        if fl:
            rows.append([name, "NL" if key == "loss_nl" else "code", f"{fl[0]:.3f}", f"{fl[1]:.3f}",
                         str(records[-1]["step"]), f"{records[-1].get('tokens_seen', 0):,}"])  # fmt: skip
    return [
        "## Training loss per modality",
        "",
        _table(["run", "tokens", "first logged loss", "last logged loss", "steps", "tokens seen"], rows),
        "",
        (
            ""
            if any("loss_nl" in r for m in MODELS for r in run.further[m])
            else f"{run.further_objective} trains only on code tokens, so the further pre-trainings have no NL loss. "
        )
        + (
            "The separated model's code loss normalises over the code vocabulary (the shared rows plus the code "
            "copies), the baseline's over the whole vocabulary."
        ),
        "",
        "![loss](plots/loss.png)",
        "",
    ]


def similarity_section(run: DemoRun) -> list[str]:
    """How far the separated tokens' code rows moved from their NL rows, during training and at its end."""
    curve, final = run.curve, run.final
    lowest = ", ".join(f"`{t!r}` {c:.2f}" for t, c in final[:8])
    highest = ", ".join(f"`{t!r}` {c:.2f}" for t, c in final[-5:][::-1])
    return [
        "## NL vs code embeddings of the separated tokens",
        "",
        (
            "Each code copy starts as an exact copy of its NL row (cosine 1). Logged during training "
            f"(TensorBoard `{SIMILARITY_TAG}`): mean cosine {curve.mean[0]:.3f} at step {curve.steps[0]}, "
            f"{curve.mean[-1]:.3f} at step {curve.steps[-1]} (lowest token {curve.low[-1]:.3f})."
        ),
        "",
        f"Moved most: {lowest}. Moved least: {highest}.",
        "",
        "![similarity](plots/similarity.png)",
        "",
    ]


def score_section(out: Path, a: str = "separated", b: str = "baseline") -> list[str]:
    """Separated vs baseline by `mmpt score` (the NLL of the reference solutions); none when the demo did not run it."""
    p = Paths(out)
    paths = [p.score(a), p.score(b)]
    if not all(path.exists() for path in paths):
        return []
    result = score_stats.compare(score_stats.read_scores(paths[0]), score_stats.read_scores(paths[1]))
    return [
        "## Likelihood of the reference solutions (`mmpt score`)",
        "",
        ("pass@k is 0 for models this small; the mean negative log-likelihood per code token of each "
         "problem's reference body (given the prompt, code-vocabulary softmax) separates them at any scale. "
         "Lower is better."),
        "",
        score_stats.compare_text(result, a, b),
        "",
    ]  # fmt: skip


def write_report(out: Path, settings: dict | None = None) -> Path:
    """Write OUT/report.md and OUT/plots/*.png from a demo run folder; returns the report's path."""
    out = Path(out)
    run = read_demo_run(out, settings)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    write_plots(run, plots)
    md = ["# mmpt demo report", ""]
    md += what_ran_section(run)
    md += headline_section(run)
    md += passk_section(run)
    md += incremental_section(run)
    md += outcomes_section(run)
    md += loss_section(run)
    md += watch_section(out, run.labels, plots, run.times)
    md += similarity_section(run)
    md += score_section(out)
    md += ["## Where the time went", "", timing_table(run.times), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("mmpt report", "(Re)write a demo run's report.md and plots from what its stages wrote.")
    ap.add_argument("run_dir", type=Path, help="a folder written by `mmpt demo` (its --out)")
    args = ap.parse_args(argv)
    try:
        print(write_report(args.run_dir))
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"mmpt report: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
