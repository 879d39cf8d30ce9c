"""`mmpt score`: how likely a checkpoint finds each problem's reference solution, given its prompt.

    mmpt score --model runs/x/final --benchmark humaneval --out scores.jsonl
    mmpt score --compare runs/a/scores.jsonl runs/b/scores.jsonl      (paired: a − b)
    torchrun --nproc_per_node 4 -m mmpt score ...   (srun, mpiexec, deepspeed: as `mmpt generate`)

pass@k is 0 for small models, so it cannot tell two of them apart; the negative log-likelihood of
the reference can. Per problem: the instance `docstring → signature + reference body → <eot>` is laid
out as the checkpoint was trained (`mmpt.json`), and every token after the generation prompt (the
reference body and `<eot>`, all code tokens) is scored with the code-vocabulary softmax the model
generates with (prefix-LM checkpoints see their NL prefix bidirectionally). A record holds the
summed NLL (nats) and the token count; `nll` = their ratio is the problem's mean NLL per code token.
The summary is the mean over problems with a bootstrap confidence interval over problems.

Ranks split the problems and append to OUT.rank{r}.jsonl; rank 0 merges them into OUT. A rerun
skips problems already scored (the same files and merge as `mmpt generate`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mmpt.cli import command_parser
from mmpt.data.codeformat import encode_flat_instance, encode_flat_prompt
from mmpt.data.instances import encode_instance, encode_prompt, sentinel_ids
from mmpt.distributed import detect
from mmpt.eval import paper
from mmpt.eval.engines.ours import load_checkpoint
from mmpt.eval.problems import BENCHMARKS, Problem
from mmpt.eval.samples import merge, rank_file, records_on_disk, shard, wait_for_all
from mmpt.jsonl import JsonlAppender, read_jsonl, require
from mmpt.model.attention import packed_forward
from mmpt.model.folder import PROMPT_STYLES
from mmpt.model.split_embeddings import restrict_to_code

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ScoreConfig:
    """One `mmpt score` run."""

    model: Path  # checkpoint dir (config, weights, tokenizer, separation.json, mmpt.json)
    out: Path  # one record per problem, JSON lines; ranks write OUT.rank{r}.jsonl beside it
    batch_size: int = 8  # instances per forward pass
    progress: bool = True
    prompt_style: str | None = None  # mmpt | paper (mmpt.eval.paper); None: the checkpoint's (mmpt.json)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def paper_scored_instance(tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
    """(ids, start) under prompt style paper: the official prompt with every line of the reference
    written (flattened as its incremental tasks are) and `<eot>`; scored from the prompt's end."""
    prompt, _ = paper.prompt_ids(tokenizer, smap, layout, problem)
    lines = paper.flat_lines(problem.reference, problem.signature)
    whole = replace(problem, given=lines[-1] if lines else problem.given)
    ids = paper.prompt_ids(tokenizer, smap, layout, whole)[0] + smap.to_code([sentinel_ids(tokenizer).eot])
    return ids, max(len(prompt), 1)


def scored_instance(tokenizer, smap, layout: str, problem: Problem, code_format: str = "plain") -> tuple[list[int], int]:
    """(ids, start): the whole instance with the reference body, and where its scored part starts.

    `start` is the length of the longest common prefix with the generation prompt: tokens from
    there on are what generation would have had to write. `code_format` flat: both in the paper's
    flattened format (checkpoints from `mmpt import-checkpoint`).
    """
    body = problem.given + problem.reference
    if code_format == "flat":
        ids, _ = encode_flat_instance(tokenizer, smap, layout, problem.docstring, problem.signature, body)
        prompt, _, _ = encode_flat_prompt(tokenizer, smap, layout, problem.docstring, problem.signature, problem.given)
    else:
        code = problem.signature + "\n" + body
        ids, _ = encode_instance(tokenizer, smap, layout, problem.docstring, code, problem.signature, body)
        prompt, _ = encode_prompt(tokenizer, smap, layout, problem.docstring, problem.signature, problem.given)
    start = 0
    while start < min(len(ids), len(prompt)) and ids[start] == prompt[start]:
        start += 1
    return ids, max(start, 1)  # the first token has no predictor


@torch.no_grad()
def instance_nll(model, instances: list[tuple[list[int], int]], pad_id: int, code_mask: torch.Tensor,
                 prefix_id: int | None = None) -> list[tuple[float, int]]:  # fmt: skip
    """(summed NLL in nats, scored tokens) of each (ids, start), in one padded forward pass.

    Rows are right-padded; each pad is an instance of its own (position 0), so no real token sees
    one. With `prefix_id` the tokens up to and including the first `prefix_id` attend bidirectionally.
    """
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in instances)
    input_ids = torch.full((len(instances), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(instances), width), dtype=torch.long)
    prefix = torch.zeros((len(instances), width), dtype=torch.bool)
    for b, (ids, _) in enumerate(instances):
        input_ids[b, : len(ids)] = torch.as_tensor(ids)
        positions[b, : len(ids)] = torch.arange(len(ids))
        if prefix_id is not None and prefix_id in ids:
            prefix[b, : ids.index(prefix_id) + 1] = True
    batch = {"input_ids": input_ids.to(device), "position_ids": positions.to(device), "prefix": prefix.to(device)}
    logits = packed_forward(model, batch).float()  # (B, N, V)
    logp = torch.log_softmax(restrict_to_code(logits, code_mask.to(device)), dim=-1)  # (B, N, V)
    out = []
    for b, (ids, start) in enumerate(instances):
        targets = torch.as_tensor(ids[start:], device=device)  # (T,)
        picked = logp[b, start - 1 : len(ids) - 1].gather(-1, targets[:, None]).squeeze(-1)  # (T,)
        out.append((float(-picked.sum()), len(targets)))
    return out


def score_record(problem: Problem, nll_sum: float, tokens: int) -> dict:
    """One line of a scores file (`completion_id` 0: the merge and resume of samples files apply)."""
    return {"task_id": problem.task_id, "completion_id": 0, "nll": nll_sum / tokens, "nll_sum": nll_sum, "tokens": tokens}


def run(config: ScoreConfig, problems: list[Problem]) -> Path | None:
    """Score this rank's shard of the problems; rank 0 merges. Returns OUT on rank 0."""
    where = detect()
    device = torch.device(f"cuda:{where.local_rank}" if torch.cuda.is_available() else "cpu")
    model, tokenizer, smap, meta = load_checkpoint(config.model, device)
    sentinels = sentinel_ids(tokenizer)
    code_mask = smap.vocab_masks(model.get_output_embeddings().weight.shape[0])[1]
    prefix_id = sentinels.python if meta.prefix_lm else None
    style = config.prompt_style or meta.prompt_style

    config.out.parent.mkdir(parents=True, exist_ok=True)
    done = records_on_disk(config.out).keys()
    todo = [p for p in shard(problems, where.rank, where.world_size) if (p.task_id, 0) not in done]
    bar = tqdm(total=len(todo), desc=f"score rank {where.rank}", unit="problem", disable=not config.progress)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        if style == "paper":
            instances = [paper_scored_instance(tokenizer, smap, meta.layout, p) for p in batch]
        else:
            instances = [scored_instance(tokenizer, smap, meta.layout, p, meta.code_format) for p in batch]
        scores = instance_nll(model, instances, sentinels.pad, code_mask, prefix_id)
        with JsonlAppender(rank_file(config.out, where.rank)) as appender:
            for p, (nll_sum, tokens) in zip(batch, scores):
                appender.write(score_record(p, nll_sum, tokens))
        bar.update(len(batch))
    bar.close()
    if where.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if where.rank != 0:
        return None
    wait_for_all(config.out, {(p.task_id, 0) for p in problems}, who="mmpt score")
    merge(config.out, problems)
    return config.out


# --- statistics ---------------------------------------------------------------------------------


def read_scores(path: str | Path) -> dict[str, float]:
    """{task_id: mean NLL per code token} of a scores file."""
    scores = {}
    for number, row in read_jsonl(path):
        require(row, {"task_id": str, "nll": float}, f"{path}:{number}")
        scores[row["task_id"]] = row["nll"]
    if not scores:
        raise ValueError(f"{path}: no scores")
    return scores


def bootstrap_interval(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (CONFIDENCE) of the mean of `values` (n,), resampling its entries."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)  # (resamples,)
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def summarize(scores: dict[str, float], seed: int = 0) -> dict:
    """Mean NLL per code token over problems, its bootstrap interval, and the problem count."""
    values = np.asarray(list(scores.values()), dtype=np.float64)
    lo, hi = bootstrap_interval(values, seed=seed)
    return {"nll": float(values.mean()), "ci_low": lo, "ci_high": hi, "confidence": CONFIDENCE, "n_problems": len(values)}


def compare(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict:
    """Paired comparison of two scores files: mean of (a − b) over their common problems, its
    bootstrap interval (problems resampled, pairs kept), and whether the interval excludes 0."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two score files share no problem")
    diff = np.asarray([a[t] - b[t] for t in common], dtype=np.float64)
    lo, hi = bootstrap_interval(diff, seed=seed)
    return {
        "difference": float(diff.mean()), "ci_low": lo, "ci_high": hi, "confidence": CONFIDENCE,
        "excludes_zero": bool(lo > 0 or hi < 0), "n_problems": len(common),
        "a_nll": float(np.mean([a[t] for t in common])), "b_nll": float(np.mean([b[t] for t in common])),
    }  # fmt: skip


def compare_text(result: dict, a_name: str, b_name: str) -> str:
    """One honest sentence on a `compare` result (lower NLL = the reference is more likely)."""
    # 3 significant digits: differences between tiny models can be far below 1e-3 nats
    ci = f"{result['confidence']:.0%} interval [{result['ci_low']:+.3g}, {result['ci_high']:+.3g}]"
    head = (
        f"Mean NLL per code token of the reference solutions: {a_name} {result['a_nll']:.4f}, {b_name} "
        f"{result['b_nll']:.4f} nats over {result['n_problems']} problems; difference {a_name} − {b_name} "
        f"{result['difference']:+.3g} nats ({ci}, paired bootstrap over problems)."
    )
    if not result["excludes_zero"]:
        return head + " The interval includes 0: at this scale the two cannot be told apart by this metric."
    better = a_name if result["difference"] < 0 else b_name
    return head + f" The interval excludes 0: {better} finds the reference solutions more likely."


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("mmpt score", "NLL per code token of the reference solutions.")
    ap.add_argument("--model", type=Path, help="checkpoint dir (`mmpt export` or `mmpt import-checkpoint`)")
    ap.add_argument("--benchmark", choices=BENCHMARKS, help="problems whose reference solutions are scored")
    ap.add_argument("--data-file", type=Path, default=None, help="local copy of the benchmark")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--batch-size", type=int, default=8, help="problems per forward pass")
    ap.add_argument("--out", type=Path, help="scores JSON lines")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two scores files (A − B)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None, help="default: the checkpoint's (paper when imported)")
    a = ap.parse_args(argv)
    try:
        if a.compare:
            result = compare(read_scores(a.compare[0]), read_scores(a.compare[1]))
            print(json.dumps(result))
            print(compare_text(result, a.compare[0].parent.name or "A", a.compare[1].parent.name or "B"), file=sys.stderr)
            return 0
        if a.model is None or a.benchmark is None or a.out is None:
            raise ValueError("--model, --benchmark and --out are required (or --compare A B)")
        style = paper.resolve_style(a.prompt_style, a.model)
        problems = paper.load_styled_problems(style, a.benchmark, a.data_file, limit=a.limit)
        out = run(ScoreConfig(a.model, a.out, a.batch_size, not a.no_progress, style), problems)
        if out is not None:
            print(json.dumps({"out": str(out), **summarize(read_scores(out))}))
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt score: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
