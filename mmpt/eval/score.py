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
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mmpt.cli import command_parser
from mmpt.data.instances import sentinel_ids
from mmpt.distributed import detect, rank_device
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.engines.ours import load_checkpoint
from mmpt.eval.problem_options import add_problem_options, problem_options
from mmpt.eval.samples import gather, rank_file, records_on_disk, shard
from mmpt.eval.score_stats import compare, compare_text, read_scores, summarize
from mmpt.eval.styles.registry import load_problems, prompt_style
from mmpt.jsonl import JsonlAppender
from mmpt.model.attention import packed_forward
from mmpt.model.folder import resolve_prompt_style
from mmpt.model.split_embeddings import restrict_to_code


@dataclass(frozen=True)
class ScoreConfig:
    """One `mmpt score` run."""

    model: Path  # checkpoint dir (config, weights, tokenizer, separation.json, mmpt.json)
    out: Path  # one record per problem, JSON lines; ranks write OUT.rank{r}.jsonl beside it
    batch_size: int = 8  # instances per forward pass
    progress: bool = True
    prompt_style: str | None = None  # mmpt | paper (mmpt.eval.styles); None: the checkpoint's (mmpt.json)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


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
    model, tokenizer, smap, meta = load_checkpoint(config.model, rank_device(where))
    sentinels = sentinel_ids(tokenizer)
    code_mask = smap.vocab_masks(model.get_output_embeddings().weight.shape[0])[1]
    prefix_id = sentinels.python if meta.prefix_lm else None
    style = prompt_style(config.prompt_style or meta.prompt_style, meta.code_format)

    config.out.parent.mkdir(parents=True, exist_ok=True)
    done = records_on_disk(config.out).keys()
    todo = [p for p in shard(problems, where.rank, where.world_size) if (p.task_id, 0) not in done]
    bar = tqdm(total=len(todo), desc=f"score rank {where.rank}", unit="problem", disable=not config.progress)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        instances = [style.scored_instance(tokenizer, smap, meta.layout, p) for p in batch]
        scores = instance_nll(model, instances, sentinels.pad, code_mask, prefix_id)
        with JsonlAppender(rank_file(config.out, where.rank)) as appender:
            for p, (nll_sum, tokens) in zip(batch, scores):
                appender.write(score_record(p, nll_sum, tokens))
        bar.update(len(batch))
    bar.close()
    return gather(config.out, problems, {(p.task_id, 0) for p in problems}, where, "mmpt score")


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("mmpt score", "NLL per code token of the reference solutions.")
    ap.add_argument("--model", type=Path, help="checkpoint dir (`mmpt export` or `mmpt import-checkpoint`)")
    add_problem_options(ap, only=("benchmark", "data_file", "limit", "prompt_style", "split"), required=False)
    ap.add_argument("--batch-size", type=int, default=8, help="problems per forward pass")
    ap.add_argument("--out", type=Path, help="scores JSON lines")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two scores files (A − B)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    try:
        if a.compare:
            result = compare(read_scores(a.compare[0]), read_scores(a.compare[1]))
            print(json.dumps(result))
            print(compare_text(result, a.compare[0].parent.name or "A", a.compare[1].parent.name or "B"), file=sys.stderr)
            return 0
        chosen = problem_options(a)
        if a.model is None or chosen.benchmark is None or a.out is None:
            raise ValueError("--model, --benchmark and --out are required (or --compare A B)")
        style = resolve_prompt_style(chosen.prompt_style, a.model)
        problems = load_problems(style, chosen.benchmark, chosen.data_file, limit=chosen.limit, split=chosen.split)
        out = run(ScoreConfig(a.model, a.out, a.batch_size, not a.no_progress, style), problems)
        if out is not None:
            print(json.dumps({"out": str(out), **summarize(read_scores(out))}))
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt score: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
