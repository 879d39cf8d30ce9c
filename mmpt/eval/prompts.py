"""`mmpt prompts`: the prompt ids the engine is given, one JSON line per task, to diff against another harness.

    mmpt prompts --model runs/authors/pycodegpt --benchmark humaneval [--incremental] \\
        [--prompt-style paper|mmpt] [--data-file F] [--limit N] --out prompts.jsonl

Each line: `task_id`, `ids` (exactly what `mmpt generate` hands the engine) and `text` (the ids
decoded with special tokens kept; code copies decoded as their originals).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.eval import paper
from mmpt.eval.problems import BENCHMARKS, Problem
from mmpt.jsonl import write_jsonl
from mmpt.model.folder import PROMPT_STYLES


def prompt_records(model: Path, problems: list[Problem], style: str) -> list[dict]:
    """One record per problem: its prompt ids under `style` and their text."""
    from mmpt.eval.generate import encode_prompts, open_checkpoint

    checkpoint = open_checkpoint(model)
    prompts, _ = encode_prompts(checkpoint, problems, style)
    return [paper.prompt_record(checkpoint.tokenizer, checkpoint.smap, p.task_id, ids) for p, ids in zip(problems, prompts)]


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("mmpt prompts", "Write the prompt ids of every task, as the engine gets them.")
    ap.add_argument("--model", required=True, type=Path, help="checkpoint folder")
    ap.add_argument("--benchmark", required=True, choices=BENCHMARKS, help="whose problems are prompted")
    ap.add_argument("--data-file", type=Path, default=None, help="local copy of the benchmark (no download)")
    ap.add_argument("--incremental", action="store_true", help="incremental tasks t_0..t_{L-1} per problem")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None, help="default: the checkpoint's (paper when imported)")
    ap.add_argument("--out", required=True, type=Path, help="JSON lines: task_id, ids, text")
    a = ap.parse_args(argv)
    try:
        style = paper.resolve_style(a.prompt_style, a.model)
        problems = paper.load_styled_problems(style, a.benchmark, a.data_file, a.incremental, a.limit)
        records = prompt_records(a.model, problems, style)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt prompts: {e}", file=sys.stderr)
        return 2
    write_jsonl(a.out, records)
    print(f"mmpt prompts: {len(records)} prompts (style {style}) -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
