"""Which tasks are judged split, which in one process, and what a sample's verdict records."""

from __future__ import annotations

import base64
import queue
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace

import pytest

from mmpt.eval import data
from mmpt.eval.benchmarks.evalplus import PlusProblem
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.benchmarks.registry import load_problems
from mmpt.eval.sandbox.host import RunResult, Sandbox, SandboxConfig
from mmpt.eval.sandbox.inside import wire
from mmpt.eval.sandbox.judging import RETRIES, SKIPPED, HarnessError, Judge, global_names, plan, split_record
from mmpt.eval.styles.registry import load_problems as load_styled

MBPP = data.MBPP  # the shipped release


def problem(test: str, reference: str = "    return x\n", prompt: str = "def f(x):\n") -> Problem:
    return Problem("T/1", "T/1", "", "", "", "f", prompt, test, reference=reference)


def test_every_humaneval_task_has_a_split_plan_calling_only_its_entry_point():
    for p in load_problems("humaneval"):
        got = plan(p)
        assert got.shared_reason == "" and got.proxies == (p.entry_point,), p.task_id
        # the prompt's helpers (HumanEval/38's encode_cyclic) are set up from the trusted prompt
        assert got.setup == p.prompt[: len(got.setup)] and f"def {p.entry_point}(" not in got.setup
    p32 = load_problems("humaneval")[32]
    assert "def poly(" in plan(p32).setup


def test_literal_calls_go_ahead_in_the_order_of_the_tests():
    p = problem(
        "def check(candidate):\n    assert candidate(2) == 2\n    assert candidate([1, {2}], y=-1.5) == 1\n    n = 3\n    assert candidate(n) == 3\n\ncheck(f)\n"
    )
    ahead = [wire.decode(bytes.fromhex(h)) for h in plan(p).ahead]
    assert ahead == [("f", (2,), {}), ("f", ([1, {2}],), {"y": -1.5})]


def test_names_the_tests_use_are_proxies_unless_the_setup_or_tests_bind_them():
    p = problem("import math\nh = 2\nassert f(h) == g(math.pi)\n", prompt="import os\n\ndef g(x):\n    return x\n\ndef f(x):\n")
    assert plan(p).proxies == ("f",)  # g: the prompt's helper; math, h: the tests' own
    # a builtin's name is the program's when the reference defines it (MBPP/126 defines `sum`)
    p126 = next(p for p in load_problems("mbpp", MBPP) if p.task_id == "MBPP/126")
    assert plan(p126).proxies == ("sum",)


@pytest.mark.parametrize(
    ("test", "reason"),
    [
        ("import inspect\nassert 'for' in inspect.getsource(f)\n", "inspect the function's code"),
        ("assert f(1 ==\n", "do not parse"),
    ],
)
def test_static_reasons_for_one_process(test, reason):
    assert reason in plan(problem(test)).shared_reason


@pytest.mark.heavy
def test_judge_falls_back_only_where_the_reference_needs_it_and_never_reruns_a_failure():
    counter_test = "assert f('aab') == {'a': 2, 'b': 1}\n"
    counter = Problem(
        "T/counter",
        "T/counter",
        "",
        "",
        "",
        "f",
        "def f(s):\n",
        counter_test,
        reference="    from collections import OrderedDict\n    return OrderedDict((c, s.count(c)) for c in s)\n",
    )
    plain = Problem(
        "T/plain",
        "T/plain",
        "",
        "",
        "",
        "f",
        "def f(s):\n",
        counter_test,
        reference="    return {c: s.count(c) for c in set(s)}\n",
    )
    judge = Judge({p.task_id: p for p in (counter, plain)}, 30.0)
    forgery = "    class D(dict):\n        def __eq__(self, other):\n            return True\n    return D()\n"
    with Sandbox(SandboxConfig()) as box:
        # the reference returns an OrderedDict: the task is judged in one process, and says why
        v = judge.judge(box, "T/counter", counter.reference, 5.0)
        assert (v.run.status, v.mode) == ("passed", "shared") and "returned an object of type OrderedDict" in v.shared_reason
        # from then on its samples run in one process only
        v = judge.judge(box, "T/counter", "    return {}\n", 5.0)
        assert (v.run.status, v.mode) == ("failed", "shared")
        # where the reference passes split, an OrderedDict (or a forged dict) fails split, and is
        # never run again in one process (where the tests would hand it their expected values)
        runs = []
        real_run = box.run
        box.run = lambda program, timeout: runs.append(program) or real_run(program, timeout)
        v = judge.judge(box, "T/plain", counter.reference, 5.0)
        assert (v.run.status, v.mode, len(runs)) == ("failed", "split", 1)
        v = judge.judge(box, "T/plain", forgery, 5.0)
        assert (v.run.status, v.mode, len(runs)) == ("failed", "split", 2)
        assert v.run.detail == "Violation: f returned an object of type f.<locals>.D"
        v = judge.judge(box, "T/plain", "    return {}\n", 5.0)
        assert (v.run.status, v.mode, len(runs)) == ("failed", "split", 3)
        v = judge.judge(box, "T/plain", plain.reference, 5.0)
        assert (v.run.status, v.mode) == ("passed", "split")
        assert all(not isinstance(program, str) for program in runs)  # none of them in one process


class FakeBox:
    """A sandbox that answers each run from a script: {kind ("split"|"shared"): [RunResult, ...]}."""

    def __init__(self, script: dict) -> None:
        self.script, self.runs = script, []

    def run(self, program, timeout):
        kind = "shared" if isinstance(program, str) else "split"
        self.runs.append(kind)
        return self.script[kind].pop(0) if len(self.script[kind]) > 1 else self.script[kind][0]

    def close(self) -> None:
        pass


PLAIN = Problem("T/p", "T/p", "", "", "", "f", "def f(s):\n", "assert f(1) == 1\n", reference="    return s\n")
ERROR, FAILED, PASSED = (
    RunResult("error", "sandbox setup: x", 0.0),
    RunResult("failed", "AssertionError", 0.0),
    RunResult("passed", "", 0.0),
)
# a failure that says split could not carry what the tests do: only then is the reference checked
NOT_PLAIN = RunResult("failed", "Violation: f returned an object of type OrderedDict", 0.0)


def test_a_harness_error_is_retried_and_never_a_verdict(monkeypatch):
    # an error, then a pass: the retry's verdict
    box = FakeBox({"split": [ERROR, PASSED], "shared": [PASSED]})
    v = Judge({"T/p": PLAIN}, 30.0).judge(box, "T/p", "    return s\n", 5.0)
    assert (v.run.status, v.mode, box.runs) == ("passed", "split", ["split", "split"])
    # errors every time: the verdict is an error (not written as a result), nothing else is run
    box = FakeBox({"split": [ERROR], "shared": [PASSED]})
    v = Judge({"T/p": PLAIN}, 30.0).judge(box, "T/p", "    return s\n", 5.0)
    assert (v.run.status, box.runs) == ("error", ["split"] * RETRIES)
    # a failed split run is the verdict: no reference check, no second run in one process
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: pytest.fail("the reference was checked"))
    box = FakeBox({"split": [FAILED], "shared": [PASSED]})
    v = Judge({"T/p": PLAIN}, 30.0).judge(box, "T/p", "    return 0\n", 5.0)
    assert (v.run.status, v.mode, box.runs) == ("failed", "split", ["split"])


def test_the_reference_check_runs_in_the_judges_own_sandbox_and_is_not_cached_on_errors(monkeypatch):
    probes = []

    def probe(config):
        probes.append(FakeBox({"split": [ERROR], "shared": [PASSED]}))
        return probes[-1]

    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", probe)
    judge = Judge({"T/p": PLAIN}, 30.0)
    sample_box = FakeBox({"split": [NOT_PLAIN], "shared": [PASSED]})  # fails split for want of plain data
    with pytest.raises(HarnessError, match="the reference of T/p could not be checked"):
        judge.judge(sample_box, "T/p", "    return 0\n", 5.0)
    assert len(probes) == RETRIES and all(p.runs == ["split"] for p in probes)  # a fresh sandbox each time
    assert sample_box.runs == ["split"]  # the reference never ran in the sample's sandbox
    # nothing was cached: once the probe works, the task is split and the sample's failure stands
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: FakeBox({"split": [PASSED], "shared": [PASSED]}))
    v = judge.judge(sample_box, "T/p", "    return 0\n", 5.0)
    assert (v.run.status, v.mode, sample_box.runs) == ("failed", "split", ["split", "split"])
    # a reference that fails split for the same reason: the task is judged in one process
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: FakeBox({"split": [NOT_PLAIN], "shared": [PASSED]}))
    judge = Judge({"T/p": PLAIN}, 30.0)
    v = judge.judge(FakeBox({"split": [NOT_PLAIN], "shared": [PASSED]}), "T/p", "    return 0\n", 5.0)
    assert (v.run.status, v.mode) == ("passed", "shared") and "returned an object of type OrderedDict" in v.shared_reason


def humaneval_x() -> list[Problem]:
    """HumanEval-X's Python problems as shipped (the tests the paper's evaluation runs), with the
    whole prompt as their program's, as HumanEval-X's own harness runs them."""
    import gzip
    import json

    with gzip.open(data.HUMANEVAL_X_PYTHON, "rt") as f:
        rows = [json.loads(line) for line in f]
    problems = []
    for row in rows:
        entry = row["test"].strip().splitlines()[-1].removeprefix("check(").removesuffix(")")
        problems.append(
            Problem(
                row["task_id"], row["task_id"], "", "", "", entry, row["prompt"], row["test"], reference=row["canonical_solution"]
            )
        )
    return problems


def paper_with_humaneval_x() -> list[Problem]:
    """Prompt style paper's HumanEval problems with HumanEval-X's tests (what the paper executes)."""
    tests = {p.task_id.split("/")[1]: p.test for p in humaneval_x()}
    return [replace(p, test=tests[p.task_id.split("/")[1]]) for p in load_styled("paper", "humaneval")]


@pytest.mark.parametrize("style", ["mmpt", "paper"])
@pytest.mark.parametrize("benchmark", ["humaneval", "mbpp", "humaneval-x"])
def test_every_task_of_both_prompt_styles_is_split_and_serves_only_its_entry_point_or_the_prompts_defs(style, benchmark):
    if benchmark == "humaneval-x":
        problems = humaneval_x() if style == "mmpt" else paper_with_humaneval_x()
    else:
        problems = load_styled(style, benchmark)
    assert len(problems) == {"humaneval": 164, "mbpp": 500, "humaneval-x": 164}[benchmark]
    for p in problems:
        got = plan(p)
        assert got.shared_reason == "", (p.task_id, got.shared_reason)
        served = {p.entry_point} | {m.group(1) for m in re.finditer(r"^def (\w+)\(", p.prompt, re.M)}
        # (paper's MBPP/349 serves nothing: its tests define `check` over the program's, as the official does)
        assert set(got.proxies) <= served and (got.proxies or p.task_id == "MBPP/349"), (p.task_id, got.proxies)
    # the tests' own helpers are trusted setup of the checker, never the candidate's to serve
    if benchmark != "mbpp":
        by_number = {p.task_id.split("/")[1]: p for p in problems}
        for number, helper in (("32", "poly"), ("38", "encode_cyclic"), ("50", "encode_shift")):
            got = plan(by_number[number])
            assert helper not in got.proxies and f"def {helper}(" in got.setup, (number, got)


def test_free_names_come_from_scopes_not_from_a_flat_walk():
    # a parameter named like the entry point is the tests' own; the module-level use is the program's
    tests = "def check(f):\n    assert f(1) == 1\n    g = [f(x) for x in (1,)]\n\ncheck(f)\n"
    assert plan(problem(tests)).proxies == ("f",)
    bound, read = global_names(tests)
    assert bound == {"check"} and read == {"check", "f"}
    # a name the tests bind only inside a function is still a global where another scope reads it
    bound, read = global_names("def setup():\n    global h\n    h = 2\nsetup()\nassert h == 2\n")
    assert "h" in bound and "h" in read
    # a helper the tests call that only the tests' helpers (test_helpers) define: not served
    p = replace(problem("assert helper(f(1)) == 1\n"), test_helpers="def helper(x):\n    return x\n")
    assert plan(p).proxies == ("f",) and "def helper(" in plan(p).setup


@pytest.mark.heavy
def test_humaneval_x_canonical_solutions_pass_split_and_paper_programs_match_one_process():
    full, paper_style = humaneval_x(), paper_with_humaneval_x()
    judge = Judge({**{p.task_id: p for p in paper_style}, **{p.task_id: p for p in full}}, 30.0)
    boxes = queue.Queue()

    def verdicts(p: Problem, one_process: bool) -> tuple:
        box = boxes.get()
        try:
            split = judge.judge(box, p.task_id, p.reference, 10.0)
            return p.task_id, split, box.run(p.program(p.reference), 10.0) if one_process else None
        finally:
            boxes.put(box)

    with Sandbox(SandboxConfig()) as a, Sandbox(SandboxConfig()) as b, ThreadPoolExecutor(2) as pool:
        boxes.put(a)
        boxes.put(b)
        try:
            results = list(pool.map(lambda p: verdicts(p, False), full))
            failed = [(task, v) for task, v, _ in results if (v.mode, v.run.status) != ("split", "passed")]
            assert failed == [], failed
            # prompt style paper: the official program (no prompt helpers); split gives the verdict one
            # process gives (every numpy-importing program of it costs an import: a quarter of the tasks)
            sample = [p for i, p in enumerate(paper_style) if i % 4 == 0 or i in (32, 38, 50)]
            results = list(pool.map(lambda p: verdicts(p, True), sample))
        finally:
            judge.close()
    differ = [(task, v.run.detail, one.detail) for task, v, one in results if (v.mode, v.run.status) != ("split", one.status)]
    assert differ == [("HumanEval/50", "", "NameError: name 'encode_shift' is not defined")], differ


# --- HumanEval+ / MBPP+ -----------------------------------------------------------------------

PLUS = PlusProblem(
    **{f.name: getattr(PLAIN, f.name) for f in fields(Problem)},
    reference_program="def ref(s):\n    return s\n",
    reference_entry_point="ref",
    base_inputs=([1], [2]),
    plus_inputs=([3], [4], [5]),
)


class FakeProbe:
    """The judge's own sandbox: answers reference runs from a script (a run status, or the outputs)."""

    def __init__(self, script: list, runs: list) -> None:
        self.script, self.runs = script, runs

    def run_reference(self, program, entry_point, inputs, not_none, timeout):
        self.runs.append(wire.decode(inputs))
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, RunResult):
            return answer, b""
        outputs = [args[0] for args in wire.decode(inputs)]
        return PASSED, wire.encode((outputs, [0.5] * len(outputs)))

    def close(self) -> None:
        pass


class InputsBox:
    """A sample's sandbox: records each inputs run's program and answers from a script."""

    def __init__(self, script: list[RunResult]) -> None:
        self.script, self.programs = script, []

    def run(self, program, timeout):
        self.programs.append((program, timeout))
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def test_plus_samples_are_judged_by_their_base_then_plus_inputs_with_the_references_outputs(monkeypatch):
    references: list = []
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: FakeProbe(["outputs"], references))
    judge = Judge({"T/p": PLUS}, 30.0)
    box = InputsBox([PASSED, RunResult("failed", "input 2: AssertionError: wrong output", 0.1)])
    v = judge.judge(box, "T/p", "    return s\n", 5.0)
    assert (v.run.status, v.plus.status, v.outcome.status, v.mode) == ("passed", "failed", "failed", "split")
    assert split_record(v.plus) == {"status": "failed", "detail": "AssertionError: wrong output", "first_failure": 2}
    # each run: the candidate's program is setup + prompt + completion, and nothing else; the checker
    # gets the inputs, the reference's outputs and EvalPlus's limits (max(4 s, 4 x 0.5 s) per call)
    for (program, wall), inputs in zip(box.programs, (PLUS.base_inputs, PLUS.plus_inputs)):
        assert program.candidate == PLUS.setup + PLUS.prompt + "    return s\n" and (program.test, program.proxies) == ("", ())
        spec = wire.decode(base64.b64decode(program.inputs))
        assert spec == ("f", list(inputs), [args[0] for args in inputs], 0.0, "exact", [4.0] * len(inputs))
        assert wall == min(60.0, 4.0 * len(inputs)) + 2
    # a failed base run: no plus run; the reference ran once per split, in the judge's own sandbox
    box = InputsBox([RunResult("failed", "input 0: ZeroDivisionError: division by zero", 0.1)])
    v = judge.judge(box, "T/p", "    return 1 / 0\n", 5.0)
    assert (v.outcome.status, v.plus, len(box.programs)) == ("failed", SKIPPED, 1)
    assert references == [list(PLUS.base_inputs), list(PLUS.plus_inputs)]


def test_a_reference_that_fails_is_an_error_of_its_task_and_is_run_once(monkeypatch):
    references: list = []
    monkeypatch.setattr(
        "mmpt.eval.sandbox.judging.Sandbox",
        lambda config: FakeProbe([RunResult("failed", "ReferenceFailed: input 1: KeyError: 3", 0.0)], references),
    )
    judge = Judge({"T/p": PLUS}, 30.0)
    for _ in range(2):
        with pytest.raises(
            HarnessError, match=r"EvalPlus's reference of T/p on its base inputs failed: ReferenceFailed: input 1"
        ):
            judge.judge(InputsBox([PASSED]), "T/p", "    return s\n", 5.0)
    assert len(references) == 1  # the task's data is at fault: not rerun for every sample
    # a reference run the harness could not finish: retried in a fresh sandbox, then an error, not kept
    references.clear()
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: FakeProbe([ERROR], references))
    judge = Judge({"T/p": PLUS}, 30.0)
    with pytest.raises(HarnessError, match="could not be run"):
        judge.judge(InputsBox([PASSED]), "T/p", "    return s\n", 5.0)
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: FakeProbe(["outputs"], references))
    assert judge.judge(InputsBox([PASSED]), "T/p", "    return s\n", 5.0).outcome.status == "passed"
    assert len(references) == RETRIES + 2


def test_hub_copies_take_their_base_verdict_from_the_base_tests(monkeypatch):
    monkeypatch.setattr("mmpt.eval.sandbox.judging.Sandbox", lambda config: FakeProbe(["outputs"], []))
    hub = replace(PLUS, base_inputs=None)
    box = FakeBox({"split": [FAILED], "shared": [PASSED]})
    v = Judge({"T/p": hub}, 30.0).judge(box, "T/p", "    return 0\n", 5.0)  # the tests' split run only
    assert (v.run.status, v.plus, box.runs) == ("failed", SKIPPED, ["split"])
    assert split_record(v.run) == {"status": "failed", "detail": "AssertionError", "first_failure": None}
