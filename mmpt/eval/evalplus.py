"""HumanEval+ and MBPP+ (EvalPlus): the base benchmarks' problems with EvalPlus's test inputs and rules.

A problem of `humaneval+` / `mbpp+` is mmpt's own HumanEval / MBPP problem of the same task
(same task id, prompt, docstring, signature, setup: a samples file generated for the base
benchmark serves both) that also carries EvalPlus's reference program, its base and plus inputs,
the tolerance `atol` and the oracle its outputs are judged by (`evalplus_rules`, which runs
inside the sandbox: `mmpt.eval.sandbox.inside.evalplus_rules`).
MBPP+'s 378 tasks come from sanitized MBPP, whose ids span all of MBPP's splits (MBPP/2 ... MBPP/809).

Sources, in the order tried:
- a file in EvalPlus's released JSONL format (HumanEvalPlus-v0.1.10.jsonl.gz, MbppPlus-v0.2.0.jsonl.gz,
  gzipped or not): one task per line with `task_id`, `prompt`, `entry_point`, `canonical_solution`,
  `base_input`, `plus_input`, `atol`. MBPP+'s inputs are stored as JSON and turned back into the
  tuples, sets and complex numbers its functions take (`MBPP_INPUT_TYPES`), as EvalPlus does.
- the hub datasets (evalplus/humanevalplus, evalplus/mbppplus), or a JSONL of their rows: each
  row's `test` is a script that holds the inputs as Python literals. The hub's copy merges the
  base and the plus inputs (deduplicated) into one list: those problems have `base_inputs=None`
  and all of them in `plus_inputs`.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from mmpt.eval import humaneval, mbpp
from mmpt.eval.problems import Problem
from mmpt.jsonl import read_jsonl

BENCHMARKS = ("humaneval+", "mbpp+")
HUB = {"humaneval+": "evalplus/humanevalplus", "mbpp+": "evalplus/mbppplus"}
RELEASE = {"humaneval+": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp+": "MbppPlus-v0.2.0.jsonl.gz"}
_RELEASE_REPO = {"humaneval+": "humanevalplus_release", "mbpp+": "mbppplus_release"}

# EvalPlus picks a task's oracle by the name of its reference's function (see evalplus_rules.ORACLES)
ORACLES = {
    "humaneval+": {"find_zero": "poly_root"},  # HumanEval/32
    "mbpp+": {
        **dict.fromkeys(
            [
                "similar_elements",  # MBPP/2
                "find_char_long",  # MBPP/7
                "common_in_nested_lists",  # MBPP/111
                "extract_singly",  # MBPP/140
                "larg_nnum",  # MBPP/232
                "intersection_array",  # MBPP/249
                "find_dissimilar",  # MBPP/579
                "Diff",  # MBPP/769
            ],
            "set_equal",
        ),
        **dict.fromkeys(["check_str", "text_match_three", "text_starta_endb"], "not_none"),  # regex matches
        "are_equivalent": "any",  # MBPP/164
        "sum_div": "or_zero",  # MBPP/295
        "surface_Area": "surface_area",  # MBPP/581
        "digit_distance_nums": "digit_distance",  # MBPP/558
    },
}

# How MBPP+'s release file stores inputs its functions take as tuples, sets or complex numbers (JSON
# has none), by task number; each is turned back as EvalPlus's loader does, quirks included (some
# drop arguments past the ones they convert; MBPP/115 turns an empty list into {}).
MBPP_INPUT_TYPES = {
    **dict.fromkeys(
        [2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809],
        "args_tuples",
    ),
    **dict.fromkeys([63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780], "args_lists_of_tuples"),
    **dict.fromkeys([75, 413, 444, 753], "first_list_of_tuples"),
    **dict.fromkeys([106, 750], "second_tuple"),
    115: "first_list_of_sets",
    124: "float_complex",
    **dict.fromkeys([250, 405, 446, 617, 720, 763, 808], "first_tuple"),
    **dict.fromkeys([259, 401, 445], "args_tuples_of_tuples"),
    278: "first_tuple_of_tuples",
    307: "first_tuple_three",
    722: "first_dict_of_tuples",
    252: "complex",
    **dict.fromkeys([580, 615, 791], "all_tuples"),
}


class EvalPlusError(ValueError):
    """EvalPlus data that cannot be used (or found); the message says where and what to do."""


@dataclass(frozen=True)
class PlusProblem(Problem):
    """A base problem (see `Problem`) with EvalPlus's tests: inputs, expected outputs from a
    reference, and how outputs are compared."""

    # EvalPlus's reference: its prompt + canonical solution; run on each input for the expected
    # outputs and the time limits (trusted: it runs where the benchmark's own code runs)
    reference_program: str = ""
    reference_entry_point: str = ""  # its function (MBPP+ renamed a few: MBPP/164 are_equivalent)
    # each input is the arguments of one call; base_inputs None: a hub copy (merged into plus_inputs)
    base_inputs: tuple | None = field(default=None, compare=False)
    plus_inputs: tuple = field(default=(), compare=False)
    atol: float = 0.0
    oracle: str = "exact"  # a key of evalplus_rules.ORACLES


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def _mbpp_input(kind: str | None, args: list):
    """One MBPP+ release input (a JSON list of arguments) with the Python types its function takes."""
    if kind is None:
        return args
    if kind == "args_tuples":
        return [tuple(a) for a in args]
    if kind == "args_lists_of_tuples":
        return [[tuple(x) for x in a] for a in args]
    if kind == "first_list_of_tuples":
        return [[tuple(x) for x in args[0]], args[1]]
    if kind == "second_tuple":
        return [args[0], tuple(args[1])]
    if kind == "first_list_of_sets":
        return [[set(x) if isinstance(x, list) and x else {} for x in args[0]]]
    if kind == "float_complex":
        return (float(args[0]), complex(args[1]))
    if kind == "first_tuple":
        return [tuple(args[0]), args[1]]
    if kind == "args_tuples_of_tuples":
        return [tuple(tuple(x) for x in a) for a in args]
    if kind == "first_tuple_of_tuples":
        return [tuple(tuple(x) if isinstance(x, list) else x for x in args[0])]
    if kind == "first_tuple_three":
        return [tuple(args[0]), args[1], args[2]]
    if kind == "first_dict_of_tuples":
        return [{k: tuple(v) for k, v in args[0].items()}, *args[1:]]
    if kind == "complex":
        return [complex(args[0])]
    if kind == "all_tuples":
        return _tuples(args)
    raise ValueError(f"unknown MBPP+ input kind {kind!r}")


def _number(task: str) -> int:
    return int(str(task).rsplit("/", 1)[-1])


class _FloatNames(ast.NodeTransformer):
    """`inf` and `nan` (as repr prints floats) as the constants they stand for."""

    def visit_Name(self, name: ast.Name) -> ast.expr:
        if name.id in ("inf", "nan"):
            return ast.copy_location(ast.Constant(float(name.id)), name)
        return name


def _literal(node: ast.expr):
    """The value of a literal in a hub test script (Python literals, floats printed as `inf`, `nan`)."""
    return ast.literal_eval(_FloatNames().visit(node))


def parse_hub_test(test: str) -> tuple[list, float, str]:
    """(inputs, atol, name of the function tested) from a hub row's `test` script.

    The script (EvalPlus's "original format") assigns `inputs = [...]` and checks each input with
    `assertion(<function>(*inp), ..., <atol>)` (HumanEval+ scripts call the function `candidate`),
    except find_zero's, which asserts `... <= <atol>`.
    """
    inputs = function = None
    atols, bounds = [], []
    for node in ast.walk(ast.parse(test)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "inputs" for t in node.targets):
            inputs = _literal(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "assertion" and node.args:
            atols.append(node.args[-1])
            first = node.args[0]
            if isinstance(first, ast.Call) and isinstance(first.func, ast.Name):
                function = first.func.id
        elif isinstance(node, ast.Compare) and isinstance(node.ops[-1], ast.LtE):
            bounds.append(node.comparators[-1])
    if not isinstance(inputs, list) or not all(isinstance(i, (list, tuple)) for i in inputs):
        raise ValueError("its test script has no `inputs = [...]` list of argument lists")
    for node in atols or bounds:  # the bound of an assertion helper's own `<= atol` is no literal
        try:
            atol = _literal(node)
        except ValueError:
            continue
        if isinstance(atol, (int, float)) and not isinstance(atol, bool):
            return inputs, float(atol), function or "candidate"
    raise ValueError("its test script has no tolerance (the last argument of `assertion(...)`)")


def _row_problem(benchmark: str, row: dict, base: dict[str, Problem], where: str) -> PlusProblem:
    """One release or hub row as a PlusProblem over its base problem; errors name `where` and the field."""
    if "task_id" not in row:
        raise EvalPlusError(f"{where}: missing field 'task_id'")
    try:
        number = _number(row["task_id"]) if benchmark == "mbpp+" else None
    except ValueError:
        raise EvalPlusError(f"{where}: field 'task_id' must be an MBPP task number (Mbpp/N), got {row['task_id']!r}") from None
    task_id = f"MBPP/{number}" if benchmark == "mbpp+" else str(row["task_id"])
    if task_id not in base:
        raise EvalPlusError(f"{where}: task {row['task_id']!r} has no problem in mmpt's {benchmark[:-1]}")
    try:
        if "base_input" in row:  # the release format
            for name, kind in (
                ("prompt", str),
                ("entry_point", str),
                ("canonical_solution", str),
                ("base_input", list),
                ("plus_input", list),
            ):
                if not isinstance(row.get(name), kind):
                    raise ValueError(f"field {name!r} must be a {kind.__name__}")
            if not isinstance(row.get("atol"), (int, float)) or isinstance(row["atol"], bool):
                raise ValueError("field 'atol' must be a number")
            if not all(isinstance(args, list) for args in row["base_input"] + row["plus_input"]):
                raise ValueError("each input of 'base_input' and 'plus_input' must be a list of arguments")
            program, entry_point, atol = row["prompt"] + row["canonical_solution"], row["entry_point"], float(row["atol"])
            convert = (lambda args: _mbpp_input(MBPP_INPUT_TYPES.get(number), args)) if number else (lambda args: args)
            base_inputs = tuple(convert(args) for args in row["base_input"])
            plus_inputs = tuple(convert(args) for args in row["plus_input"])
        elif isinstance(row.get("test"), str):  # the hub's rows
            inputs, atol, function = parse_hub_test(row["test"])
            if benchmark == "mbpp+":
                program, entry_point = row.get("code"), function
            else:
                program, entry_point = row.get("prompt", "") + row.get("canonical_solution", ""), row.get("entry_point")
            if not isinstance(program, str) or not isinstance(entry_point, str):
                raise ValueError("a hub row needs `code` (MBPP+) or `prompt`, `canonical_solution`, `entry_point` (HumanEval+)")
            base_inputs, plus_inputs = None, tuple(inputs)
        else:
            raise ValueError("neither EvalPlus's release format (`base_input`, `plus_input`, ...) nor a hub row (`test`)")
    except (ValueError, TypeError, KeyError, IndexError, SyntaxError) as e:
        raise EvalPlusError(f"{where}: task {row['task_id']}: {e}") from None
    if math.isnan(atol) or atol < 0:
        raise EvalPlusError(f"{where}: task {row['task_id']}: field 'atol' must be >= 0, got {atol}")
    problem = base[task_id]
    return PlusProblem(
        **{f.name: getattr(problem, f.name) for f in fields(Problem)},
        reference_program=program,
        reference_entry_point=entry_point,
        base_inputs=base_inputs,
        plus_inputs=plus_inputs,
        atol=atol,
        oracle=ORACLES[benchmark].get(entry_point, "exact"),
    )


def _hub_rows(benchmark: str):
    import datasets

    try:
        dataset = datasets.load_dataset(HUB[benchmark], split="test")
    except (OSError, ValueError) as e:  # ConnectionError (offline or unreachable), DatasetNotFoundError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EvalPlusError(
            f"{benchmark}: the hub dataset {HUB[benchmark]} cannot be loaded ({reason}); download EvalPlus's release "
            f"file {RELEASE[benchmark]} (GitHub, evalplus/{_RELEASE_REPO[benchmark]}) and pass it with --data-file"
        ) from None
    return [(f"hub dataset {HUB[benchmark]}, row {i}", row) for i, row in enumerate(dataset)]


def load(benchmark: str, data_file: str | Path | None = None, limit: int | None = None, split: str = "test") -> list[PlusProblem]:
    """The problems of `benchmark` (humaneval+|mbpp+) in file order: from `data_file` (EvalPlus's
    release JSONL or hub rows as JSONL), else from the hub; `limit` keeps the first N. They have no
    splits: `split` must be "test" (the default of every command), which means all of them."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown EvalPlus benchmark {benchmark!r}; choose one of {BENCHMARKS}")
    if split != "test":
        raise ValueError(f"{benchmark} has no splits (it is EvalPlus's own set of tasks): drop --split {split}")
    base_problems = humaneval.load() if benchmark == "humaneval+" else mbpp.load(split="all")
    base = {p.task_id: p for p in base_problems}
    if data_file is not None:
        path = Path(data_file)
        rows = [(f"{path}:{number}", row) for number, row in read_jsonl(path)]
    else:
        rows = _hub_rows(benchmark)
    rows = rows[:limit] if limit is not None else rows
    problems = [_row_problem(benchmark, dict(row), base, where) for where, row in rows]
    seen = set()
    for (where, _), p in zip(rows, problems):
        if p.task_id in seen:
            raise EvalPlusError(f"{where}: task {p.task_id} appears twice")
        seen.add(p.task_id)
    return problems
