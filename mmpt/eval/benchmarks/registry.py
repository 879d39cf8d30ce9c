"""The benchmarks by name: adding one is a module of this folder (`problem.Benchmark`) and a line here."""

from __future__ import annotations

from pathlib import Path

from mmpt.eval.benchmarks import humaneval, humaneval_plus, mbpp, mbpp_plus
from mmpt.eval.benchmarks.problem import Benchmark, Problem, incremental_tasks

REGISTRY: dict[str, Benchmark] = {
    "humaneval": humaneval,
    "mbpp": mbpp,
    # EvalPlus's (`evalplus`): the base benchmarks' problems, judged by EvalPlus's base and plus inputs
    "humaneval+": humaneval_plus.PLUS,
    "mbpp+": mbpp_plus.PLUS,
}
BENCHMARKS = tuple(REGISTRY)


def benchmark(name: str) -> Benchmark:
    """The module of benchmark `name`; an unknown name is an error that lists the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return REGISTRY[name]


def load_problems(
    name: str, data_file: str | Path | None = None, incremental: bool = False, limit: int | None = None, split: str = "test"
) -> list[Problem]:
    """The problems of benchmark `name` as mmpt prompts them, in benchmark order; `limit` keeps the
    first N problems (before expanding them into incremental tasks, `incremental_tasks`)."""
    problems = benchmark(name).problems(data_file, split, limit)
    return [task for p in problems for task in incremental_tasks(p)] if incremental else problems
