"""MBPP problems from a JSONL file (google-research or hub format) or the hub, split for prompting.

The NL statement is the problem `text` followed by the first test assert on its own line: as is
common for MBPP, the assert shows the model the function's name and how it is called. The
signature is the entry point's def line (its header, up to the colon) and nothing else of the
reference: helper functions, classes, constants or imports of the reference solution would hand the
model part of the answer. The reference body is the entry point's body; the reference's other
top-level code (imports, helpers, classes) and `test_setup_code` are the problem's trusted `setup`:
it runs ahead of the prompt in the candidate's process and in the checker's (`mmpt.eval.sandbox.judging`),
so that the reference passes split as it does in one process; the model never sees it.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

from mmpt.data.extract import header_end
from mmpt.eval import data
from mmpt.eval.problems import Problem
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


def load(data_file: str | Path | None = None, split: str = "test") -> list[Problem]:
    """Problems of `split` (test|validation|train|prompt|all) in task-id order.

    Without `data_file`, the release shipped with mmpt (`mmpt.eval.data.MBPP`, no network). A file
    is filtered by the standard task-id ranges; rows whose task_id is not an integer (a custom
    file) are all kept.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"MBPP split must be one of {[*SPLITS, 'all']}, got {split!r}")
    path = Path(data_file) if data_file is not None else data.MBPP
    rows = [
        (f"{path}:{number}", row)
        for number, row in read_jsonl(path)
        if split == "all" or not isinstance(row.get("task_id"), int) or row["task_id"] in SPLITS[split]
    ]
    return [to_problem(row, where) for where, row in rows]
