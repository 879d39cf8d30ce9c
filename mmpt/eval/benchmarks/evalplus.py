"""EvalPlus's benchmarks (`humaneval_plus`, `mbpp_plus`): the base benchmarks' problems with EvalPlus's test inputs and rules.

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
  tuples, sets and complex numbers its functions take (`mbpp_plus.INPUT_TYPES`), as EvalPlus does.
- the hub datasets (evalplus/humanevalplus, evalplus/mbppplus), or a JSONL of their rows: each
  row's `test` is a script that holds the inputs as Python literals. The hub's copy merges the
  base and the plus inputs (deduplicated) into one list: those problems have `base_inputs=None`
  and all of them in `plus_inputs`.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from mmpt.eval.benchmarks.problem import Problem
from mmpt.jsonl import read_jsonl

BENCHMARKS = ("humaneval+", "mbpp+")  # the benchmarks of `humaneval_plus` and `mbpp_plus`: judged by base and plus inputs


class EvalPlusError(ValueError):
    """EvalPlus data that cannot be used (or found); the message says where and what to do."""


@dataclass(frozen=True)
class PlusBenchmark:
    """What sets one EvalPlus benchmark apart; its module (`humaneval_plus`, `mbpp_plus`) holds it."""

    name: str  # humaneval+ | mbpp+
    hub: str  # the hub dataset
    release: str  # EvalPlus's release file
    release_repo: str  # its GitHub repository under evalplus/
    base: str  # mmpt's benchmark whose problems these are
    base_problems: Callable[[], list[Problem]]  # all of them, every split
    # EvalPlus picks a task's oracle by the name of its reference's function (see evalplus_rules.ORACLES)
    oracles: dict[str, str]
    # (mmpt's task id, a function turning one release input into the arguments its function takes)
    # of a row's `task_id`; ValueError with what is wrong
    task: Callable[[object], tuple[str, Callable[[list], object]]]
    # (reference program, its function) of a hub row, given the function its test script calls
    hub_reference: Callable[[dict, str], tuple[object, object]]

    def problems(self, data_file: str | Path | None = None, split: str = "test", limit: int | None = None) -> list[Problem]:
        """Its problems (`load`): a `Benchmark` of the registry."""
        return load(self, data_file, limit, split)

    def official_problems(self, data_file=None, split: str = "test", limit: int | None = None, incremental: bool = False):
        """None: the paper's evaluation has no EvalPlus benchmark."""
        raise ValueError(
            f"prompt style paper reproduces the paper's evaluation, which has no {self.name}: "
            "pass --prompt-style mmpt to run it (an imported checkpoint defaults to paper)"
        )


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


def _row_problem(benchmark: PlusBenchmark, row: dict, base: dict[str, Problem], where: str) -> PlusProblem:
    """One release or hub row as a PlusProblem over its base problem; errors name `where` and the field."""
    if "task_id" not in row:
        raise EvalPlusError(f"{where}: missing field 'task_id'")
    try:
        task_id, convert = benchmark.task(row["task_id"])
    except ValueError as e:
        raise EvalPlusError(f"{where}: field 'task_id' {e}, got {row['task_id']!r}") from None
    if task_id not in base:
        raise EvalPlusError(f"{where}: task {row['task_id']!r} has no problem in mmpt's {benchmark.base}")
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
            base_inputs = tuple(convert(args) for args in row["base_input"])
            plus_inputs = tuple(convert(args) for args in row["plus_input"])
        elif isinstance(row.get("test"), str):  # the hub's rows
            inputs, atol, function = parse_hub_test(row["test"])
            program, entry_point = benchmark.hub_reference(row, function)
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
        oracle=benchmark.oracles.get(entry_point, "exact"),
    )


def _hub_rows(benchmark: PlusBenchmark):
    import datasets

    try:
        dataset = datasets.load_dataset(benchmark.hub, split="test")
    except (OSError, ValueError) as e:  # ConnectionError (offline or unreachable), DatasetNotFoundError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EvalPlusError(
            f"{benchmark.name}: the hub dataset {benchmark.hub} cannot be loaded ({reason}); download EvalPlus's release "
            f"file {benchmark.release} (GitHub, evalplus/{benchmark.release_repo}) and pass it with --data-file"
        ) from None
    return [(f"hub dataset {benchmark.hub}, row {i}", row) for i, row in enumerate(dataset)]


def load(
    benchmark: PlusBenchmark, data_file: str | Path | None = None, limit: int | None = None, split: str = "test"
) -> list[PlusProblem]:
    """The problems of `benchmark` in file order: from `data_file` (EvalPlus's release JSONL or hub
    rows as JSONL), else from the hub; `limit` keeps the first N. They have no splits: `split` must
    be "test" (the default of every command), which means all of them."""
    if split != "test":
        raise ValueError(f"{benchmark.name} has no splits (it is EvalPlus's own set of tasks): drop --split {split}")
    base = {p.task_id: p for p in benchmark.base_problems()}
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
