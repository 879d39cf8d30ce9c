"""The two processes of a split run: the candidate's answers calls, the checker's runs the tests.

Runs inside the sandbox, forked by `zygote.py` (standard library only). The candidate's process
executes prompt + completion and then serves calls; the checker's process executes the trusted
setup (the prompt's imports and helper functions, without the function to write) and the
benchmark's tests, in which every function of the program that the tests call is a `Proxy`.
Between them travel only frames of plain data (`wire.py`):

    checker -> candidate   prompt + completion (the first frame), then (name, args, kwargs[, how])
    candidate -> checker   b"R"                                   loaded, ready for calls
                           b"L" + (exception type, args, message)   prompt + completion raised
                           b"V" + (value, args after, kwargs after)   a call returned
                           b"E" + (exception type, args, message)   a call raised
                           b"X" + message                        the value could not travel

The checker trusts nothing it reads: a frame it cannot decode, a value that is not plain data
(an object whose `__eq__` is always True, a generator, a lambda), or the candidate's process
exiting makes the run fail, even if the tests swallow the exception.

Nothing the candidate sees depends on the verdict, so no candidate learns which of its answers
was wrong (and no later one can be told): an `assert` of the tests that fails (outside a `try`)
records the first failure and the tests go on, making the calls a passing run would make with
the same answers (`soften`; the failure is the verdict, reported as it happens); a message that
would call the program is shown as written, not evaluated. The candidate never reads the end of
its call pipe nor writes into a closed reply pipe: its zygote holds their other ends until the
candidate is dead. Arguments of the types that
can be mutated in place (list, dict, set) are copied back after each call, so tests that check
an argument's mutation see it. An argument that is an object the trusted setup bound to a name
travels as that name (`wire.Ref`): the candidate's program ran the same setup. A test that uses a
proxy in a way it cannot serve (any other argument that is not plain data, an attribute of the
function) raises `NeedsShared`: the run fails with
that detail, and `mmpt execute` decides from the reference solution whether the task must be
judged in one process instead.

HumanEval+ / MBPP+ runs have no test code: the checker calls the entry point on each of EvalPlus's
inputs, each call under its own time limit, and judges the outputs by the reference's with
EvalPlus's rules (`check_inputs`, `evalplus_rules`). The candidate gets the same calls in the same
order whatever their verdicts: a wrong output is recorded and the calls go on (only a call past its
limit, or an answer that breaks the protocol, ends them: the candidate knows those itself), and
each call is sent as soon as the last answer arrived, before that answer is judged. A call with
`how` "not_none" (EvalPlus's regex tasks) is answered with `out if type(out) is bool else out is
not None`, so a match object, which cannot travel, is judged as EvalPlus judges it.
"""

from __future__ import annotations

import ast
import builtins
import os
import select
import struct
import sys
import time
from collections import deque

try:  # inside the sandbox this file, frames.py, wire.py and evalplus_rules.py sit side by side in /mmpt
    import evalplus_rules
    import frames
    import wire
except ImportError:  # pragma: no cover - imported from the package (tests)
    from mmpt.eval.sandbox.inside import evalplus_rules, frames, wire

STATUS = struct.Struct(">?i")  # (the candidate's setup finished, its exit status) from the candidates' zygote
MAX_FRAME = 256 << 20  # a larger answer is refused (the memory limit would stop it anyway)
FAILED = "__mmpt_failed__"  # what a softened assert calls in the tests' scope
# calls a softened assert's message may make (it is evaluated only when the assert fails)
_MESSAGE_CALLS = {"str", "repr", "format", "len", "int", "float", "round", "abs", "sorted", "list", "tuple", "set", "type"}
# exception classes a candidate's exception is raised as in the checker: builtins only, looked up
# by name in this table made before any test ran; any other is a CandidateError
_EXCEPTIONS = {name: cls for name, cls in vars(builtins).items() if isinstance(cls, type) and issubclass(cls, BaseException)}
_MUTABLE = (list, dict, set)


class Violation(BaseException):
    """The candidate's process broke the protocol; the run fails (not an Exception: tests that
    catch Exception cannot swallow it)."""


class HarnessFault(BaseException):
    """The harness failed (a setup step of the candidate's process), not the candidate: no verdict."""


class NeedsShared(BaseException):
    """The tests use the program in a way a proxy cannot serve."""


class CandidateError(Exception):
    """An exception of a class that is not a builtin, raised by the candidate's code."""


class OverTime(BaseException):
    """A call ran past its own time limit (an inputs run's); the calls end there."""


class InputFailure(Exception):
    """The first failure of an inputs run, as the verdict records it: "input I: what happened"."""


class _CallFailed(Exception):
    """What `evalplus_rules.first_failure` sees of a call that returned no value (the cause is kept)."""


# --- the candidate's process ------------------------------------------------------------------


def _describe(e: BaseException) -> bytes:
    """(class name, args, message) of an exception; args None where they are not plain data."""
    try:
        return wire.encode((type(e).__name__, e.args, str(e)[:300]))
    except Exception:
        return wire.encode((type(e).__name__, None, f"<{type(e).__name__} with a message that cannot be shown>"))


def serve(code: str, call_r: int, reply_w: int) -> None:
    """Run the program, then answer calls until the call pipe ends (in the sandbox it never does:
    the candidate is killed once the checker is done).

    Answers are written when no further request is waiting, all in one write: the checker, which
    sent the literal calls ahead, then wakes once for all of them instead of once per answer.
    """
    scope: dict = {}
    try:
        exec(compile(code, "<program>", "exec"), scope)  # noqa: S102 - untrusted, inside the sandbox
    except BaseException as e:
        _flush()
        frames.write_frames(reply_w, [b"L" + _describe(e)])
        return
    out = [b"R"]
    while True:
        if out and not select.select([call_r], [], [], 0)[0]:
            _flush()  # what the program printed so far: the process is killed, never exits
            frames.write_frames(reply_w, out)
            out = []
        request = frames.read_frame(call_r, MAX_FRAME)
        if request is None:
            break
        out.append(_answer(scope, request))
    frames.write_frames(reply_w, out)


def _flush() -> None:
    """Flush stdout and stderr, whatever the program did to them."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _answer(scope: dict, frame: bytes) -> bytes:
    name, args, kwargs, *how = wire.decode(frame, refs=True)
    try:
        if name not in scope:
            raise NameError(f"name {name!r} is not defined")
        args = [_resolve(scope, a) for a in args]
        kwargs = {k: _resolve(scope, v) for k, v in kwargs.items()}
        value = scope[name](*args, **kwargs)
    except BaseException as e:
        return b"E" + _describe(e)
    if how == ["not_none"] and type(value) is not bool:  # all that EvalPlus's not_none oracle reads of it
        value = value is not None
    after = ([a if isinstance(a, _MUTABLE) else None for a in args], {k: v for k, v in kwargs.items() if isinstance(v, _MUTABLE)})
    try:
        return b"V" + wire.encode((value, *after))
    except wire.WireError as e:
        return b"X" + wire.encode(f"{name} returned {e}" if _plain_args(after) else f"{name} left {e} in an argument")


def _resolve(scope: dict, arg: object) -> object:
    """An argument, with a `wire.Ref` replaced by this program's object of that name (the setup's)."""
    if type(arg) is not wire.Ref:
        return arg
    if arg.name not in scope:
        raise NameError(f"name {arg.name!r} is not defined")
    return scope[arg.name]


def _plain_args(after) -> bool:
    try:
        wire.encode(after)
        return True
    except wire.WireError:
        return False


# --- the checker's process --------------------------------------------------------------------


class Channel:
    """The checker's end of the pipes; remembers the first violation so swallowing it is useless."""

    def __init__(self, call_w: int, reply_r: int, status_r: int) -> None:
        # status_r: where the candidate's (setup done, exit status) arrives once it exited (`STATUS`)
        self.call_w, self.reply_r, self.status_r = call_w, reply_r, status_r
        self.failure: BaseException | None = None
        self.exit_code: int | None = None  # the candidate's, once it exited (-N: killed by signal N)
        self.sent: deque[bytes] = deque()  # requests sent, in order, whose answers were not read yet
        self.answers: dict[bytes, deque[bytes]] = {}  # request -> answers read but not used yet
        self.ahead: dict[bytes, int] = {}  # request -> how many were sent ahead and not used yet
        self.ready = False  # the candidate's program ran (read lazily, with the first answer)
        self.deadline: float | None = None  # time.monotonic() by which the next answer must be in (inputs runs)
        self.setup_objects: dict[int, tuple[str, object]] = {}  # id -> (name, object) of the setup's globals

    def send_ahead(self, requests: list[str]) -> None:
        """Send the calls whose arguments are literals in the tests' text (encoded requests, in
        hex, made by the host) before the tests run, in the order they appear there: the candidate
        computes them while the checker goes on, which saves a round trip per call. Their total
        size is capped below a pipe's buffer (`mmpt.eval.sandbox.judging`): this never blocks."""
        batch = [bytes.fromhex(text) for text in requests]
        try:
            frames.write_frames(self.call_w, batch)  # one write
        except OSError:  # the candidate's process is gone; the first call will say so
            return
        for request in batch:
            self.sent.append(request)
            self.ahead[request] = self.ahead.get(request, 0) + 1

    def call(self, request: bytes) -> tuple[bytes, object]:
        """The candidate's answer to `request`: sent ahead, or sent now."""
        self.wait_ready()
        if self.ahead.get(request):
            self.ahead[request] -= 1
        else:
            try:
                frames.write_frames(self.call_w, [request])
            except OSError:
                raise self.fail(Violation(f"the candidate's process exited ({self._status()})")) from None
            self.sent.append(request)
        while not self.answers.get(request):
            frame = self._frame()
            if not self.sent:  # cannot happen while the candidate answers each request once
                raise self.fail(Violation("the candidate's process sent an answer nobody asked for"))
            self.answers.setdefault(self.sent.popleft(), deque()).append(frame)
        return self._decoded(self.answers[request].popleft())

    def ref(self, arg: object) -> object:
        """`arg`, or a `wire.Ref` to it where it is one of the setup's globals (by identity)."""
        name, obj = self.setup_objects.get(id(arg), (None, None))
        return wire.Ref(name) if obj is arg and name is not None else arg

    def fail(self, error: BaseException) -> BaseException:
        if self.failure is None:
            self.failure = error
        return self.failure

    def _frame(self) -> bytes:
        try:
            frame = frames.read_frame(self.reply_r, MAX_FRAME, self.deadline)
        except frames.FrameError as e:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise self.fail(OverTime("over its time limit")) from None
            raise self.fail(Violation(f"the candidate's process sent {e}")) from None
        if frame is None:
            raise self.fail(Violation(f"the candidate's process exited ({self._status()})"))
        return frame

    def _decoded(self, frame: bytes) -> tuple[bytes, object]:
        kind, body = frame[:1], frame[1:]
        try:
            return kind, (wire.decode(body) if body else None)
        except wire.WireError as e:
            raise self.fail(Violation(f"the candidate's answer is not plain data ({e})")) from None

    def start(self, code: str) -> None:
        """Send the candidate's process its program (prompt + completion), the first frame."""
        try:
            frames.write_frames(self.call_w, [code.encode("utf-8", "surrogatepass")])
        except OSError:  # it is gone already: _status says why
            raise self.fail(Violation(f"the candidate's process exited ({self._status()})")) from None

    def _status(self) -> str:
        """How the candidate's process ended, as the candidates' zygote reports it; a HarnessFault
        where its setup did not finish (no code of the candidate ran: not a verdict)."""
        data = os.read(self.status_r, STATUS.size)
        if len(data) != STATUS.size:
            return "status unknown"
        setup_done, code = STATUS.unpack(data)
        if not setup_done:  # overrides any failure seen before: none of them was the candidate's
            self.failure = HarnessFault("sandbox setup: the candidate's process did not start")
            raise self.failure
        self.exit_code = code
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def wait_ready(self) -> None:
        """Read the candidate's first frame: its program ran (or the exception it raised)."""
        if self.ready:
            return
        self.ready = True
        kind, body = self._decoded(self._frame())
        if kind == b"L":  # fails the run even where the tests catch it
            raise self.fail(_exception(body, self))
        if kind != b"R":
            raise self.fail(Violation("the candidate's process did not start as expected"))


def _exception(body: object, channel: Channel) -> BaseException:
    """The candidate's exception as the checker raises it: a builtin class with the same args, or
    a CandidateError naming the class."""
    if not (
        type(body) is tuple
        and len(body) == 3
        and type(body[0]) is str
        and type(body[2]) is str
        and (body[1] is None or type(body[1]) is tuple)
    ):
        return channel.fail(Violation("the candidate's process sent a malformed exception"))
    name, args, message = body
    if name not in _EXCEPTIONS:
        return CandidateError(f"{name}: {message}")
    for make in (lambda: _EXCEPTIONS[name](*args), lambda: _EXCEPTIONS[name](message)):
        try:
            return make()
        except Exception:  # e.g. UnicodeDecodeError needs five arguments of given types
            continue
    return CandidateError(f"{name}: {message}")


def _copy_back(sent: object, got: object) -> None:
    """Make the checker's argument `sent` equal to the candidate's `got`, in place."""
    if type(sent) is not type(got) or sent == got:
        return
    if isinstance(sent, list):
        sent[:] = got
    else:  # dict or set
        sent.clear()
        sent.update(got)


def _returned(channel: Channel, kind: bytes, body: object, args, kwargs: dict) -> object:
    """The value of a call from its decoded answer, mutated arguments copied back into `args` and
    `kwargs`; raises the candidate's exception, or the violation of a malformed answer."""
    if kind == b"V" and type(body) is tuple and len(body) == 3 and type(body[1]) is list and type(body[2]) is dict:
        value, args_after, kwargs_after = body
        for sent, got in zip(args, args_after):
            _copy_back(sent, got)
        for key, got in kwargs_after.items():
            _copy_back(kwargs.get(key), got)
        return value
    if kind == b"E":
        raise _exception(body, channel)
    if kind == b"X" and type(body) is str:
        raise channel.fail(Violation(body))
    raise channel.fail(Violation("the candidate's process sent a malformed answer"))


class Proxy:
    """Stands for the program's function `name` in the tests: calls go to the candidate's process."""

    __slots__ = ("_name", "_channel")

    def __init__(self, name: str, channel: Channel) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_channel", channel)

    def __call__(self, *args, **kwargs):
        channel: Channel = object.__getattribute__(self, "_channel")
        name = object.__getattribute__(self, "_name")
        if channel.failure is not None:
            raise channel.failure
        try:
            request = wire.encode((name, args, kwargs))
        except wire.WireError as e:
            # an argument that is an object of the trusted setup (a tree MBPP/367's setup built)
            # goes by name: the candidate's program ran the same setup and has its own
            try:
                request = wire.encode((name, [channel.ref(a) for a in args], {k: channel.ref(v) for k, v in kwargs.items()}))
            except wire.WireError:
                raise channel.fail(NeedsShared(f"the tests pass {name} {e}")) from None
        kind, body = channel.call(request)
        return _returned(channel, kind, body, args, kwargs)

    def __repr__(self) -> str:
        return f"<function {object.__getattribute__(self, '_name')}>"

    def __getattr__(self, attr: str):
        name = object.__getattribute__(self, "_name")
        raise object.__getattribute__(self, "_channel").fail(NeedsShared(f"the tests read {name}.{attr}"))

    def __setattr__(self, attr: str, value) -> None:
        self.__getattr__(attr)


def _unservable(operation: str):
    def refuse(self, *args):
        name = object.__getattribute__(self, "_name")
        raise object.__getattribute__(self, "_channel").fail(NeedsShared(f"the tests use {name} with {operation}"))

    return refuse


for _op in (
    "__eq__",
    "__ne__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__bool__",
    "__len__",
    "__iter__",
    "__contains__",
    "__getitem__",
    "__add__",
    "__sub__",
    "__mul__",
    "__index__",
    "__int__",
    "__float__",
):
    setattr(Proxy, _op, _unservable(_op))
Proxy.__hash__ = object.__hash__  # a proxy may still be a dict key (identity, like a function)


class Failures:
    """The tests' failures: the first is the verdict, reported the moment it happens (`report`)."""

    def __init__(self, report=None) -> None:
        self.first: BaseException | None = None
        self.report = report

    def __call__(self, error: BaseException) -> None:
        if self.first is None:
            self.first = error
            if self.report is not None:
                self.report(error)


def soften(tree: ast.Module) -> ast.Module:
    """The tests with every `assert` outside a `try` or `with` block made soft: `if not TEST:
    __mmpt_failed__(MSG)`, which records the failure and goes on (asserts inside one still raise:
    the tests may catch or suppress them). A message that could call anything but a few pure builtins is not evaluated (it could
    call the program, and only when the assert fails): its source text stands in for it."""
    return ast.fix_missing_locations(_Soften().visit(tree))


class _Soften(ast.NodeTransformer):
    def visit_Try(self, node):  # what a try or a with block may catch or suppress keeps raising
        return node

    visit_TryStar = visit_With = visit_AsyncWith = visit_Try

    def visit_Assert(self, node: ast.Assert):
        args = []
        if node.msg is not None:
            calls = [n for n in ast.walk(node.msg) if isinstance(n, ast.Call)]
            pure = all(isinstance(c.func, ast.Name) and c.func.id in _MESSAGE_CALLS for c in calls)
            args = [node.msg if pure else ast.Constant(ast.unparse(node.msg))]
        failed = ast.Expr(ast.Call(ast.Name(FAILED, ast.Load()), args, []))
        return ast.copy_location(ast.If(ast.UnaryOp(ast.Not(), node.test), [failed], []), node)


def compile_tests(text: str):
    """The tests' code object, asserts softened (see `soften`)."""
    return compile(soften(ast.parse(text, "<test>")), "<test>", "exec")


def check(setup, test, proxies: list[str], ahead: list[str], channel: Channel, failures: Failures | None = None) -> None:
    """Run the tests against the candidate; returns only if they ran through and nothing failed or
    was violated (else raises the first failure).

    `setup`, `test`: source text or a code object (the zygote compiles each once per task; a test's
    code object comes from `compile_tests`); `ahead`: the requests to send before the tests run
    (see `Channel.send_ahead`); `failures`: where each failure is recorded as it happens.
    """
    failures = failures or Failures()
    try:
        channel.send_ahead(ahead)
        scope: dict = {}
        exec(setup if not isinstance(setup, str) else compile(setup, "<prompt>", "exec"), scope)  # noqa: S102 - trusted: the prompt
        channel.setup_objects = {id(v): (k, v) for k, v in scope.items() if k != "__builtins__"}
        for name in proxies:
            scope[name] = Proxy(name, channel)
        scope[FAILED] = lambda *message: failures(AssertionError(*message))
        channel.wait_ready()  # the program ran (or its exception fails the run) before any test does
        exec(test if not isinstance(test, str) else compile_tests(test), scope)  # noqa: S102 - trusted: the tests
    except BaseException as e:
        failures(channel.failure or e)
    if channel.failure is not None:  # a violation the tests swallowed
        failures(channel.failure)
    if failures.first is not None:
        raise failures.first


# --- inputs runs (HumanEval+ / MBPP+) -----------------------------------------------------------


class InputCalls:
    """The calls of one inputs run, in input order: `call` is `evalplus_rules.first_failure`'s.

    One call is out at a time, timed from when it was sent; the next is sent the moment an answer
    arrives, before that answer is judged, so when the candidate gets its next call does not depend
    on its last answer's verdict. No call is sent after one ran past its limit or after an answer
    that broke the protocol (the candidate knows of both itself).
    """

    def __init__(self, channel: Channel, name: str, inputs: list, limits: list[float], how: str | None) -> None:
        self.channel, self.name, self.inputs, self.limits, self.how = channel, name, inputs, limits, how
        self.sent = self.received = 0
        self.started: dict[int, float] = {}  # input -> when its call was sent (time.monotonic())
        self.errors: dict[int, BaseException] = {}  # input -> why its call returned no value

    def _send_next(self) -> None:
        i = self.sent
        if i >= len(self.inputs) or self.channel.failure is not None:
            return
        request = (self.name, self.inputs[i], {}) if self.how is None else (self.name, self.inputs[i], {}, self.how)
        try:
            frames.write_frames(self.channel.call_w, [wire.encode(request)])
        except OSError:  # the candidate's process is gone: reading its answer says how
            pass
        self.started[i] = time.monotonic()
        self.sent += 1

    def call(self, args) -> object:
        """The candidate's output on the next input (`args` is that input, mutated as the call left it)."""
        i = self.received
        if self.sent == i:
            self._send_next()
        try:
            if self.sent == i:  # nothing could be sent: the protocol is broken already
                raise self.channel.failure or Violation("no call could be sent")
            self.channel.deadline = self.started[i] + self.limits[i]
            try:
                frame = self.channel._frame()
            finally:
                self.channel.deadline = None
                self.received += 1
            self._send_next()  # before this answer is judged
            kind, body = self.channel._decoded(frame)
            return _returned(self.channel, kind, body, args, {})
        except HarnessFault:
            raise
        except BaseException as e:  # its own exception (SystemExit too), a violation, or its time
            self.errors[i] = e
            raise _CallFailed from None

    def finish(self) -> None:
        """The calls not made yet, whatever the verdict (their answers are read, not judged)."""
        while self.sent > self.received:
            try:
                self.call(self.inputs[self.received])
            except _CallFailed:
                pass

    def failure(self, i: int) -> BaseException:
        """The verdict's record of a failure on input `i` (its call's error, else a wrong output)."""
        error = self.errors.get(i)
        if isinstance(error, OverTime):
            return OverTime(f"input {i}: over its time limit of {self.limits[i]:g} s")
        if error is None:
            return InputFailure(f"input {i}: AssertionError: wrong output")
        return InputFailure(f"input {i}: {type(error).__name__}: {error}")


def check_inputs(spec: bytes, channel: Channel, failures: Failures | None = None) -> None:
    """Call the candidate's function on each input of an inputs run and judge its outputs with
    EvalPlus's rules; returns only if every output is correct (else raises the first failure).

    `spec`: the `wire` encoding of (entry point, inputs, the reference's outputs, atol, oracle,
    each call's time limit), made by the host from the reference's run (`judging.Judge`).
    """
    failures = failures or Failures()
    try:
        name, inputs, expected, atol, oracle, limits = wire.decode(spec)
        calls = InputCalls(channel, name, inputs, limits, "not_none" if oracle == "not_none" else None)
        channel.wait_ready()  # the program ran (or its exception fails the run) before the first call
        failed = evalplus_rules.first_failure(calls.call, inputs, expected, atol, oracle)
        if failed is not None:
            failures(calls.failure(failed))
            calls.finish()
    except BaseException as e:
        failures(channel.failure or e)
    if channel.failure is not None:
        failures(channel.failure)
    if failures.first is not None:
        raise failures.first
