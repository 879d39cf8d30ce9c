"""`mmpt prompts`: the prompt ids the engine is given, one JSON line per task, to diff against another harness.

    mmpt prompts --model runs/authors/pycodegpt --benchmark humaneval [--incremental] \\
        [--prompt-style paper|mmpt] [--data-file F] [--limit N] [--split S] --out prompts.jsonl

Each line: `task_id`, `ids` (exactly what `mmpt generate` hands the engine) and `text` (the ids
decoded with special tokens kept; code copies decoded as their originals).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.generate import encode_prompts, open_checkpoint
from mmpt.eval.problem_options import add_problem_options, problem_options
from mmpt.eval.styles.registry import load_problems, prompt_style
from mmpt.jsonl import write_jsonl
from mmpt.model.folder import resolve_prompt_style


def prompt_record(tokenizer, smap, task_id: str, ids: list[int]) -> dict:
    """One line: task id, the ids, their text with special tokens kept (code copies decoded as their originals)."""
    text = tokenizer.decode(smap.to_original(list(ids)), skip_special_tokens=False)
    return {"task_id": task_id, "ids": list(ids), "text": text}


def prompt_records(model: Path, problems: list[Problem], style: str) -> list[dict]:
    """One record per problem: its prompt ids under prompt style `style` (mmpt | paper) and their text."""
    checkpoint = open_checkpoint(model)
    prompts, _ = encode_prompts(checkpoint, problems, prompt_style(style, checkpoint.meta.code_format))
    return [prompt_record(checkpoint.tokenizer, checkpoint.smap, p.task_id, ids) for p, ids in zip(problems, prompts)]


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("mmpt prompts", "Write the prompt ids of every task, as the engine gets them.")
    ap.add_argument("--model", required=True, type=Path, help="checkpoint folder")
    add_problem_options(ap)
    ap.add_argument("--out", required=True, type=Path, help="JSON lines: task_id, ids, text")
    a = ap.parse_args(argv)
    try:
        chosen = problem_options(a)
        style = resolve_prompt_style(chosen.prompt_style, a.model)
        problems = load_problems(style, chosen.benchmark, chosen.data_file, chosen.incremental, chosen.limit, chosen.split)
        records = prompt_records(a.model, problems, style)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt prompts: {e}", file=sys.stderr)
        return 2
    write_jsonl(a.out, records)
    print(f"mmpt prompts: {len(records)} prompts (style {style}) -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
