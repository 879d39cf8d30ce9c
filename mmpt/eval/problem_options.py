"""The options that choose an eval command's problems, declared once: `--benchmark --data-file --limit --prompt-style --incremental --split`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mmpt.eval.benchmarks.registry import BENCHMARKS
from mmpt.modality import PROMPT_STYLES

OPTIONS = ("benchmark", "data_file", "limit", "prompt_style", "incremental", "split")


@dataclass(frozen=True)
class ProblemOptions:
    """Which problems a command works on, and in which prompt style."""

    benchmark: str | None  # one of BENCHMARKS (None only where a command has another mode: `score --compare`)
    data_file: Path | None = None  # local copy of the benchmark; None: the copy mmpt or a package ships
    limit: int | None = None  # the first N problems (before their incremental tasks)
    prompt_style: str | None = None  # mmpt | paper; None: the command's default (the checkpoint's, the samples')
    incremental: bool = False  # incremental tasks t_0..t_{L-1} of each problem
    split: str = "test"  # MBPP: test|validation|train|prompt|all (task-id ranges); the others have only test


def add_problem_options(
    ap: argparse.ArgumentParser,
    *,
    only: tuple[str, ...] = OPTIONS,
    required: bool = True,
    style_default: str = "the checkpoint's (paper when imported)",
) -> None:
    """Add the problem options named in `only` (all by default) to `ap`; `required`: --benchmark
    must be given; `style_default`: what --prompt-style falls back to, for its help."""
    if unknown := set(only) - set(OPTIONS):
        raise ValueError(f"unknown problem options {sorted(unknown)}; choose from {OPTIONS}")
    if "benchmark" in only:
        ap.add_argument("--benchmark", required=required, choices=BENCHMARKS, help="whose problems (and tests)")
    if "data_file" in only:
        ap.add_argument(
            "--data-file", type=Path, default=None, help="local copy of the benchmark (default: the shipped or packaged copy)"
        )
    if "limit" in only:
        ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    if "prompt_style" in only:
        ap.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None,
                        help=f"mmpt | paper (the paper's official evaluation); default: {style_default}")  # fmt: skip
    if "incremental" in only:
        ap.add_argument("--incremental", action="store_true", help="incremental tasks t_0..t_{L-1} per problem")
    if "split" in only:
        ap.add_argument("--split", default="test", help="MBPP split: test (task ids 11-510), validation, train, prompt, all")


def problem_options(args: argparse.Namespace) -> ProblemOptions:
    """The typed problem options of parsed arguments (those a command does not take keep their defaults)."""
    return ProblemOptions(**{name: getattr(args, name) for name in OPTIONS if hasattr(args, name)})
