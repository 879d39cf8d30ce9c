"""The checker's side of a split run against a candidate process that breaks the protocol on purpose.

The candidate here is a forked child writing frames chosen by the test (no sandbox needed: the
checker's code is what is under test); `serve` is tested against it in `test_serve_*`.
"""

from __future__ import annotations

import os
import struct

import pytest

from mmpt.eval.sandbox.inside import checker, wire
from mmpt.eval.sandbox.inside.checker import Channel, NeedsShared, Violation


def against_candidate(judge, frames: list[bytes] = (), serve_code: str | None = None, child_closes=()):
    """Run `judge(channel)` (the checker's side) against a child that sends `frames` (after reading
    one request per frame but the first), or that runs `checker.serve(serve_code)`; returns the
    exception or None. `child_closes`: descriptors the child closes first."""
    call_r, call_w = os.pipe()
    reply_r, reply_w = os.pipe()
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the candidate
        try:
            for fd in (call_w, reply_r, *child_closes):
                os.close(fd)
            if serve_code is not None:
                checker.serve(serve_code, call_r, reply_w)
            else:
                for i, frame in enumerate(frames):
                    if i:
                        checker.frames.read_frame(call_r, checker.MAX_FRAME)
                    os.write(reply_w, frame)
        finally:
            os.close(reply_w)  # as the candidate's exit would, then its status, as its relay sends it
            os.write(status_w, struct.pack(">?i", True, 0))
            os._exit(0)
    os.close(call_r)
    os.close(reply_w)
    os.close(status_w)
    channel = Channel(call_w, reply_r, status_r)
    try:
        judge(channel)
        error = None
    except BaseException as e:  # noqa: BLE001 - what the runner would report
        error = e
    os.close(call_w)
    os.close(reply_r)
    os.close(status_r)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return error


def run_checker(frames: list[bytes], test: str, proxies=("f",), ahead=(), serve_code: str | None = None, failures=None):
    """Run `checker.check` with `test` against a child (see `against_candidate`)."""
    return against_candidate(
        lambda channel: checker.check("", test, list(proxies), list(ahead), channel, failures), frames, serve_code
    )


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


READY = frame(b"R")


def value(v) -> bytes:
    return frame(b"V" + wire.encode((v, [None], {})))


def test_a_correct_answer_passes_and_a_wrong_one_fails():
    assert run_checker([READY, value(3)], "assert f(1) == 3") is None
    assert isinstance(run_checker([READY, value(4)], "assert f(1) == 3"), AssertionError)


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (frame(b"V" + b"\x00garbage"), "not plain data"),
        (frame(b"Z"), "malformed answer"),
        (frame(b"V" + wire.encode(3)), "malformed answer"),  # not (value, args, kwargs)
        (frame(b"E" + wire.encode(("ValueError",))), "malformed exception"),
        (b"\xff\xff\xff\xff", "sent a frame of"),
        (b"\x00\x00\x00\x09V", "frame cut short"),  # torn frame, then EOF
        (b"", "process exited"),
    ],
)
def test_protocol_violations_fail_even_when_the_tests_swallow_them(answer, detail):
    swallowing = "try:\n    f(1)\nexcept BaseException:\n    pass\n"
    error = run_checker([READY, answer], swallowing)
    assert isinstance(error, Violation) and detail in str(error)


def test_a_candidate_that_did_not_load_reports_its_exception():
    error = run_checker(
        [frame(b"L" + wire.encode(("NameError", ("name 'x' is not defined",), "name 'x' is not defined")))], "f(1)"
    )
    assert type(error) is NameError and str(error) == "name 'x' is not defined"


def test_exceptions_keep_builtin_classes_and_args_others_become_candidate_errors():
    key = frame(b"E" + wire.encode(("KeyError", ("k",), "'k'")))
    assert run_checker([READY, key], "try:\n    f(1)\nexcept KeyError as e:\n    assert e.args == ('k',)\n") is None
    own = frame(b"E" + wire.encode(("MyError", ("x",), "x")))
    error = run_checker([READY, own], "f(1)")
    assert type(error) is checker.CandidateError and str(error) == "MyError: x"


def test_arguments_a_proxy_cannot_carry_or_attributes_ask_for_one_process():
    for test in ("f(lambda: 1)", "f.__name__", "f == 1", "len(f)"):
        error = run_checker([READY], test)
        assert isinstance(error, NeedsShared), (test, error)
    # swallowing it does not help either
    assert isinstance(run_checker([READY], "try:\n    f(object())\nexcept BaseException:\n    pass\n"), NeedsShared)


def test_serve_copies_mutated_arguments_back_and_refuses_odd_values():
    code = "def f(xs, d=None):\n    xs.append(len(xs))\n    if d is not None:\n        d['n'] = 1\n    return tuple(xs)\n"
    test = "xs, d = [7], {}\nassert f(xs, d=d) == (7, 1)\nassert xs == [7, 1] and d == {'n': 1}\n"
    assert run_checker([], test, serve_code=code) is None
    odd = "class F(float):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return F(x)\n"
    error = run_checker([], "assert f(1.0) == 2.0", serve_code=odd)
    assert isinstance(error, Violation) and str(error) == "f returned an object of type F"
    leaves = "def f(xs):\n    xs.append(lambda: 0)\n    return 1\n"
    error = run_checker([], "assert f([]) == 1", serve_code=leaves)
    assert isinstance(error, Violation) and "left an object of type function in an argument" in str(error)


def test_calls_sent_ahead_are_answered_in_order_and_others_after_them():
    code = "calls = []\ndef f(x):\n    calls.append(x)\n    return list(calls)\n"
    ahead = [wire.encode(("f", (1,), {})).hex(), wire.encode(("f", (2,), {})).hex()]
    # the candidate answered 1 and 2 first (in the order sent); the live call f(3) comes after
    test = "assert f(3) == [1, 2, 3]\nassert f(2) == [1, 2]\nassert f(1) == [1]\nassert f(1) == [1, 2, 3, 1]\n"
    assert run_checker([], test, ahead=ahead, serve_code=code) is None


def test_exceptions_that_cannot_be_rebuilt_become_candidate_errors():
    group = frame(b"E" + wire.encode(("ExceptionGroup", None, "g (1 sub-exception)")))
    error = run_checker([READY, group], "f(1)")
    assert type(error) is checker.CandidateError and str(error) == "ExceptionGroup: g (1 sub-exception)"


class EveryFailure(checker.Failures):
    def __init__(self) -> None:
        super().__init__()
        self.all: list[str] = []

    def __call__(self, error: BaseException) -> None:
        self.all.append(str(error))
        super().__call__(error)


def test_a_failed_assert_is_recorded_and_the_tests_go_on_making_the_same_calls():
    code = "def f(x):\n    return 0\n"
    failures = EveryFailure()
    tests = "x = 1\nassert f(x) == 1, 'a'\nassert f(x + 1) == 2, 'b'\nassert f(x + 2) == 0, 'c'\nassert f(x + 3) == 4, 'd'\n"
    error = run_checker([], tests, serve_code=code, failures=failures)
    # the verdict is the first failure; every assert (and so every call) after it still ran
    assert type(error) is AssertionError and str(error) == "a" and failures.all == ["a", "b", "d"]
    # inside a try (or a with block) an assert still raises: the tests may catch (or suppress) it
    tests = "try:\n    assert f(1) == 1\n    ok = True\nexcept AssertionError:\n    ok = False\nassert ok is False\n"
    assert run_checker([], tests, serve_code=code) is None
    tests = "from contextlib import suppress\nwith suppress(AssertionError):\n    assert f(1) == 1\n"
    assert run_checker([], tests, serve_code=code) is None


def test_a_message_that_would_call_the_program_is_shown_not_evaluated():
    code = "def f(x):\n    return x\n"
    error = run_checker([], "assert f(1) == 2, 'got ' + str(f(1))\n", serve_code=code)
    assert str(error) == "'got ' + str(f(1))"
    error = run_checker([], "y = 5\nassert f(1) == 2, f'y is {y}, {len([y])}'\n", serve_code=code)
    assert str(error) == "y is 5, 1"


# --- inputs runs (HumanEval+ / MBPP+) -----------------------------------------------------------


def run_inputs(code: str, inputs: list, expected: list, oracle: str = "exact", atol: float = 0.0, limits=None):
    """Run `checker.check_inputs` against a child that serves `code`, which may log each call with
    `log(x)`; returns (the exception or None, the calls logged in order)."""
    log_r, log_w = os.pipe()
    code = f"import os\ndef log(x):\n    os.write({log_w}, repr(x).encode() + b'\\n')\n" + code
    spec = wire.encode(("f", inputs, expected, atol, oracle, limits or [5.0] * len(inputs)))
    error = against_candidate(lambda channel: checker.check_inputs(spec, channel), serve_code=code, child_closes=(log_r,))
    os.close(log_w)
    with os.fdopen(log_r, "rb") as f:
        calls = [line.decode() for line in f.read().splitlines()]
    return error, calls


def test_an_inputs_run_judges_every_output_and_names_the_first_failure():
    double = "def f(x):\n    log(x)\n    return 2 * x\n"
    assert run_inputs(double, [[1], [2], [3]], [2, 4, 6]) == (None, ["1", "2", "3"])
    error, _ = run_inputs(double, [[1], [2], [3]], [2, 5, 7])
    assert type(error) is checker.InputFailure and str(error) == "input 1: AssertionError: wrong output"
    # EvalPlus's float tolerance: atol 1e-6 from the first float output on
    assert run_inputs("def f(x):\n    return 2 * x + 1e-9\n", [[1.0], [2.0]], [2.0, 4.0])[0] is None
    error, _ = run_inputs("def f(x):\n    return 1 // (x - 2)\n", [[1], [2], [3]], [-1, 0, 1])
    assert str(error) == "input 1: ZeroDivisionError: integer division or modulo by zero"
    error, calls = run_inputs("def f(x):\n    log(x)\n    raise SystemExit(3)\n", [[1], [2]], [1, 2])
    assert str(error) == "input 0: SystemExit: 3" and calls == ["1", "2"]  # a fail at input 0; the calls go on
    error, _ = run_inputs("x = 1 / 0\ndef f(x):\n    return x\n", [[1]], [1])  # the program itself raised
    assert type(error) is ZeroDivisionError


def test_outputs_that_cannot_travel_fail_unless_the_not_none_oracle_reads_them():
    match = "import re\ndef f(s):\n    return re.match('a', s)\n"
    error, _ = run_inputs(match, [["ab"], ["b"]], [True, False])
    assert str(error) == "input 0: Violation: f returned an object of type Match"
    # EvalPlus's regex tasks: the output stands for `output is not None` (a bool as it is)
    assert run_inputs(match, [["ab"], ["b"]], [True, False], oracle="not_none")[0] is None
    assert str(run_inputs(match, [["ab"], ["b"]], [True, True], oracle="not_none")[0]) == "input 1: AssertionError: wrong output"
    assert run_inputs("def f(s):\n    return s == 'ab'\n", [["ab"], ["b"]], [True, False], oracle="not_none")[0] is None


def test_a_call_past_its_limit_ends_the_calls_and_is_a_timeout():
    slow = "import time\ndef f(x):\n    log(x)\n    if x == 2:\n        time.sleep(0.6)\n    return x\n"
    error, calls = run_inputs(slow, [[1], [2], [3]], [1, 2, 3], limits=[5.0, 0.2, 5.0])
    assert type(error) is checker.OverTime and str(error) == "input 1: over its time limit of 0.2 s" and calls == ["1", "2"]
    # after an earlier wrong output the verdict stands; the slow call still ends the calls
    error, calls = run_inputs(slow, [[1], [2], [3]], [0, 2, 3], limits=[5.0, 0.2, 5.0])
    assert str(error) == "input 0: AssertionError: wrong output" and calls == ["1", "2"]


def test_an_inputs_run_sends_the_same_calls_whatever_the_verdict():
    calls = {}
    for name, body in {"right": "x", "first wrong": "x + (x == 1)", "all wrong": "-x", "raises": "1 // 0"}.items():
        error, calls[name] = run_inputs(f"def f(x):\n    log(x)\n    return {body}\n", [[1], [2], [3]], [1, 2, 3])
        assert (error is None) == (name == "right"), (name, error)
    assert calls["right"] == calls["first wrong"] == calls["all wrong"] == calls["raises"] == ["1", "2", "3"], calls


def test_the_oracles_read_the_arguments_as_the_call_left_them():
    # find_zero's oracle evaluates poly(xs, out) after the call, as EvalPlus does: a sample that
    # empties xs passes there too (the arguments are copied back from the candidate's process)
    emptied = "def f(xs):\n    xs.clear()\n    return 0.0\n"
    assert run_inputs(emptied, [[[1.0, 2.0]]], [-0.5], oracle="poly_root", atol=1e-4)[0] is None
    kept = "def f(xs):\n    return 0.0\n"
    assert (
        str(run_inputs(kept, [[[1.0, 2.0]]], [-0.5], oracle="poly_root", atol=1e-4)[0]) == "input 0: AssertionError: wrong output"
    )
