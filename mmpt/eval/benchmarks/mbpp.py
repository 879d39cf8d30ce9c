"""MBPP problems from a JSONL file (google-research or hub format) or the hub, split for prompting.

The NL statement is the problem `text` followed by the first test assert on its own line: as is
common for MBPP, the assert shows the model the function's name and how it is called. The
signature is the entry point's def line (its header, up to the colon) and nothing else of the
reference: helper functions, classes, constants or imports of the reference solution would hand the
model part of the answer. The reference body is the entry point's body; the reference's other
top-level code (imports, helpers, classes) and `test_setup_code` are the problem's trusted `setup`:
it runs ahead of the prompt in the candidate's process and in the checker's (`mmpt.eval.sandbox.judging`),
so that the reference passes split as it does in one process; the model never sees it.

Prompt style paper reads the same rows by the official rules (`official_problems`, `official`):
the problem `text` alone, the reference's first `def` as the signature, no setup, and the tests
inside `def check(NAME):`.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import replace
from pathlib import Path

from mmpt.data.extract import header_end
from mmpt.eval import data
from mmpt.eval.benchmarks.official import HELPER_BLOCK, code_signature, official_tasks, strip_lines
from mmpt.eval.benchmarks.problem import Problem
from mmpt.jsonl import read_jsonl

# task-id ranges of the standard splits of the 974-problem release
SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}


def _parse(code: str) -> ast.Module:
    with warnings.catch_warnings():  # some references have invalid escapes ("\d"): not our concern
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(code)


def entry_point(code: str, first_test: str) -> str:
    """The top-level function of `code` that the first test calls."""
    defined = {n.name for n in _parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in ast.walk(_parse(first_test)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
            return node.func.id
    raise ValueError(f"the first test calls none of the functions the reference defines ({sorted(defined)})")


def split_reference(code: str, name: str) -> tuple[str, str, str]:
    """(signature, body, rest) of reference `code` at top-level function `name`.

    signature: the function's header lines (decorators, def, up to the colon); body: its body;
    rest: every other top-level line of `code` (before and after the function), in order.
    """
    fn = next(n for n in _parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)
    lines = code.split("\n")
    start = min([fn.lineno] + [d.lineno for d in fn.decorator_list])  # 1-based first header line
    rest = "\n".join(lines[: start - 1] + lines[fn.end_lineno :]).strip("\n")
    first = fn.body[0]
    if first.lineno == fn.lineno:  # `def f(x): return x` — move the body onto its own line
        line = lines[fn.lineno - 1]
        head, tail = line[: first.col_offset].rstrip(), line[first.col_offset :]
        body = "\n".join(["    " + tail] + lines[fn.lineno : fn.end_lineno])
        return "\n".join(lines[start - 1 : fn.lineno - 1] + [head]), body + "\n", rest
    colon = header_end(lines, fn.lineno, first.lineno)  # comment lines after the header belong to the body
    return "\n".join(lines[start - 1 : colon]), "\n".join(lines[colon : fn.end_lineno]) + "\n", rest


def to_problem(row: dict, where: str) -> Problem:
    """One MBPP row (either format) as a Problem; errors name `where` and the field."""
    text = row.get("text", row.get("prompt"))
    for name, value in (("text", text), ("code", row.get("code")), ("task_id", row.get("task_id"))):
        if value is None:
            raise ValueError(f"{where}: missing field {name!r}")
    tests = row.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError(f"{where}: field 'test_list' must be a non-empty list of strings")
    # the google-research file has `test_setup_code`; the hub's sanitized config has `test_imports`
    setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
    code = str(row["code"]).replace("\r\n", "\n").rstrip() + "\n"
    try:
        name = entry_point(code, tests[0])
        signature, body, rest = split_reference(code, name)
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: field 'code' of task {row['task_id']}: {e}") from None
    task_id = f"MBPP/{row['task_id']}"
    return Problem(
        task_id=task_id,
        base_task_id=task_id,
        docstring=f"{text.strip()}\n{tests[0].strip()}",
        signature=signature,
        given="",
        entry_point=name,
        prompt=signature + "\n",
        test="\n".join(tests) + "\n",
        setup="".join(part + "\n" for part in (rest, setup) if part),
        reference=body,
    )


def _rows(data_file: str | Path | None, split: str) -> list[tuple[str, dict]]:
    """(where, row) of `split` in file order (module doc of `problems`)."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"MBPP split must be one of {[*SPLITS, 'all']}, got {split!r}")
    path = Path(data_file) if data_file is not None else data.MBPP
    return [
        (f"{path}:{number}", row)
        for number, row in read_jsonl(path)
        if split == "all" or not isinstance(row.get("task_id"), int) or row["task_id"] in SPLITS[split]
    ]


def problems(data_file: str | Path | None = None, split: str = "test", limit: int | None = None) -> list[Problem]:
    """Problems of `split` (test|validation|train|prompt|all) in task-id order; `limit` keeps the first N.

    Without `data_file`, the release shipped with mmpt (`mmpt.eval.data.MBPP`, no network). A file
    is filtered by the standard task-id ranges; rows whose task_id is not an integer (a custom
    file) are all kept.
    """
    found = [to_problem(row, where) for where, row in _rows(data_file, split)]
    return found[:limit] if limit is not None else found


def official_problem(row: dict, problem: Problem) -> Problem:
    """One MBPP row under the official rules; `problem` is ours for the same row (its task id and
    entry point)."""
    code = str(row["code"])
    signature = code_signature(code)
    name = code[code.find("def ") + 4 : code.find("(")]
    asserts = "\n".join(f"    {t}" for t in row["test_list"])
    solution = code[code.find(signature) + len(signature) :] if signature in code else code
    return replace(
        problem,
        docstring=strip_lines(str(row.get("text", row.get("prompt")))),
        signature=signature,
        prompt=HELPER_BLOCK + signature,
        setup="",  # the official runs no setup: the reference's imports and `test_setup_code` are not run
        # the official program: prompt + code + "\n\n" + test + "\n"; the judge adds one "\n"
        test=f"\ndef check({name}):\n{asserts}\n\ncheck({name})\n",
        reference=solution,
    )


def official_problems(
    data_file: str | Path | None = None, split: str = "test", limit: int | None = None, incremental: bool = False
) -> list[Problem]:
    """MBPP under the official rules (`official_problem`), each row read once with ours."""
    rows = _rows(data_file, split)
    ours = [to_problem(row, where) for where, row in rows]  # a row ours cannot read is an error here too
    out = []
    for (_, row), problem in list(zip(rows, ours))[:limit] if limit is not None else zip(rows, ours):
        paper = official_problem(row, problem)
        out += official_tasks(paper, paper.reference, incremental)
    return out
