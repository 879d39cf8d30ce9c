"""The candidates' zygote: a pre-warmed Python, started by exec, that forks the candidate processes.

Started by `zygote.py` (exec'd before that zygote read any request), it never holds a test, a
token, a task's spec or a checker's state: a candidate forked from it inherits none of them. It
lives in the sandbox's `candidates` cgroup (pid and memory limits of the candidates), so every
candidate is born there. Per run it receives only descriptors (SCM_RIGHTS on a unix socket) and
the CPU limit:

    the call pipe's read end, the reply pipe's write end (the checker holds the other ends and
    sends prompt + completion as the first frame), the output pipe, a status pipe (the candidate's
    setup flag and exit status go back to the checker), the run's lifeline (closed by the zygote
    when the run ends), and the call pipe's write end and the reply pipe's read end to hold.

    candidates ── fork into a new pid namespace ──> candidate = its pid 1: own mount and IPC
                  namespaces, fresh /tmp and /dev/shm, an unprivileged user, rlimits, the seccomp
                  filter (`isolation.py`); runs prompt + completion, answers calls (`checker.serve`)

The zygote waits for the candidate or the lifeline, whichever ends first: when the run ends it
kills the candidate (and so its whole pid namespace). Until the candidate is dead it holds the
call pipe's write end and the reply pipe's read end, so the candidate never sees the end of its
calls nor a closed reply pipe: when the checker stopped is not something it can observe. Whether
the candidate's setup finished comes on a pipe of its own, written before any program code runs,
never from an exit status a program chooses. Standard library only, as `zygote.py`.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys

# Imported once here so each candidate starts with them warm (what HumanEval/MBPP code uses).
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, math, operator, random, re, statistics, string, typing  # noqa: E401,F401

import checker  # noqa: E402 - beside this file (in /mmpt inside the sandbox), with frames.py and wire.py
import isolation  # noqa: E402

MAX_FDS = 16


def _candidate(settings: dict, limits: dict, call_r: int, reply_w: int, out_w: int, setup_w: int) -> None:
    """pid 1 of the candidate's namespace: sets itself up, then runs prompt + completion and
    answers calls. Never returns."""
    try:
        # a session and process group of its own: kill(0, ...) would otherwise reach this zygote's
        # group across the pid namespace boundary; without a namespace it is what gets killed
        os.setsid()
        if settings["isolated"]:
            isolation.enter_program_namespaces(limits["tmp_bytes"])
        isolation.restrict(limits, settings["user"])
        isolation.stdio(out_w, {call_r, reply_w, setup_w})
        os.write(setup_w, b"1")  # setup done: from here on, what happens is the candidate's
        os.close(setup_w)
    except BaseException:
        os._exit(1)
    try:
        code = checker.frames.read_frame(call_r, checker.MAX_FRAME)  # prompt + completion, from the checker
        if code is not None:
            checker.serve(code.decode("utf-8", "surrogatepass"), call_r, reply_w)
        isolation.flush()
    except BaseException:
        pass
    os._exit(0)


def _run(settings: dict, own_pidfd: int, head: dict, fds: list[int]) -> None:
    """One candidate: fork it, wait for it or the lifeline, kill it, tell the checker how it ended."""
    call_r, reply_w, out_w, status_w, life_r, *held = fds
    limits = {**settings["limits"], "cpu_s": head["cpu_s"]}
    setup_r, setup_w = os.pipe()
    if settings["isolated"]:
        isolation.pid_namespace_for_next_child(own_pidfd)
    pid = isolation.fork()
    if pid == 0:
        for fd in (status_w, life_r, setup_r, own_pidfd, *held):
            os.close(fd)
        _candidate(settings, limits, call_r, reply_w, out_w, setup_w)
    for fd in (call_r, reply_w, out_w, setup_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    ended_by_itself = pidfd in select.select([pidfd, life_r], [], [])[0]
    if not ended_by_itself:  # the run is over: the candidate (pid 1, so its namespace) goes
        os.kill(pid, signal.SIGKILL)
    if not settings["isolated"]:  # no pid namespace: its process group is what it started
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _, wstatus, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(wstatus)
    if code == -signal.SIGKILL and usage.ru_utime + usage.ru_stime >= limits["cpu_s"]:
        code = -signal.SIGXCPU  # pid 1 ignores SIGXCPU: its CPU limit ends it with the hard limit's SIGKILL
    setup_done = os.read(setup_r, 1) == b"1"
    try:
        os.write(status_w, checker.STATUS.pack(setup_done, code))
    except OSError:  # the checker is gone (the run is over)
        pass
    for fd in (pidfd, setup_r, status_w, life_r, *held):
        os.close(fd)


def main() -> None:
    fd, settings = int(sys.argv[1]), json.loads(sys.argv[2])
    sys.path += settings["site"]  # the interpreter's site-packages, without its .pth hooks (-S)
    isolation.clean_environment()
    isolation.not_dumpable()
    isolation.die_with_parent()
    sock = socket.socket(fileno=fd)
    own_pidfd = os.pidfd_open(os.getpid())
    for _ in range(300):  # see zygote._warm_up: specialised bytecode is not copied per candidate
        checker.wire.decode(checker.wire.encode(("f", ([1.0, 2.5, -3], "ab", (None, True)), {"k": {1: b"x"}})))
    gc.freeze()
    sock.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1024, MAX_FDS)
        except OSError:
            return
        if not message:  # the zygote is gone
            return
        _run(settings, own_pidfd, json.loads(message), fds)


if __name__ == "__main__":
    main()
