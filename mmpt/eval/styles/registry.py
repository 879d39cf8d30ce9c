"""The prompt styles by name: `--prompt-style mmpt|paper`, and mmpt's own flattened for a checkpoint trained flattened."""

from __future__ import annotations

from pathlib import Path

from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.benchmarks.registry import benchmark
from mmpt.eval.styles import PromptStyle
from mmpt.eval.styles.flat import Flat
from mmpt.eval.styles.own import Own
from mmpt.eval.styles.paper import Paper
from mmpt.modality import PROMPT_STYLES

STYLES: dict[str, PromptStyle] = {"mmpt": Own(), "paper": Paper()}
FLAT = Flat()  # style mmpt for a checkpoint whose mmpt.json says `code_format: flat`


def prompt_style(name: str, code_format: str = "plain") -> PromptStyle:
    """Prompt style `name` for a checkpoint trained on `code_format` (plain | flat); an unknown name is an error."""
    if name not in STYLES:
        raise ValueError(f"--prompt-style must be one of {PROMPT_STYLES}, got {name!r}")
    return FLAT if name == "mmpt" and code_format == "flat" else STYLES[name]


def load_problems(
    style: str,
    benchmark_name: str,
    data_file: str | Path | None = None,
    incremental: bool = False,
    limit: int | None = None,
    split: str = "test",
) -> list[Problem]:
    """The problems of benchmark `benchmark_name` as prompt style `style` prompts and executes them;
    `limit` keeps the first N problems (before their incremental tasks)."""
    return prompt_style(style).problems(benchmark(benchmark_name), data_file, split, limit, incremental)
