"""The candidates' zygote: a pre-warmed Python, started by exec, that forks candidate processes.

Started by `zygote.py` (exec'd before that zygote read any request), it never holds a test, a
token, a task's spec or a checker's state: a candidate forked from it inherits none of them. It
receives per split run only descriptors (SCM_RIGHTS on a unix socket) and the CPU limit:

    the call pipe's read end, the reply pipe's write end (the checker holds the other ends; the
    checker sends prompt + completion as the first frame), the output pipe, a status pipe (the
    candidate's exit status goes back to the checker), a lifeline (closed by the zygote when the
    run ends) and the `cgroup.procs` files of the candidate's own cgroups.

    candidates ── fork ──> relay: joins the cgroups, unshare(mount, pid, IPC, network namespaces)
                             └─ fork ──> candidate = pid 1 of its pid namespace: fresh /tmp and
                                         /dev/shm, rlimits, no capabilities; runs prompt +
                                         completion and answers calls (`checker.serve`)

The relay kills the candidate (and so its whole pid namespace) when the lifeline closes; the
zygote's `cgroup.kill` of the candidate's cgroup does the same wherever cgroups are delegated.
Standard library only, as `zygote.py`.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import struct
import sys

# Imported once here so each candidate starts with them warm (what HumanEval/MBPP code uses).
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, math, operator, random, re, statistics, string, typing  # noqa: E401,F401

import checker  # noqa: E402 - beside this file (in /mmpt inside the sandbox), with wire.py
import isolation  # noqa: E402

MAX_FDS = 16


def _relay(head: dict, fds: list[int], limits: dict, isolated: bool) -> None:
    """Between the candidates' zygote and a candidate: owns its namespaces; sends the checker
    (setup done, exit status) of the candidate when it exited. Never returns."""
    status_w, setup_done, code = fds[3], False, 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; this one waits
        call_r, reply_w, out_w, status_w, life_r, *procs = fds
        limits = {**limits, "cpu_s": head["cpu_s"]}
        code, setup_done = isolation.relay(
            procs,
            isolated,
            lambda setup_w: _candidate(limits, isolated, call_r, reply_w, out_w, setup_w),
            [call_r, reply_w, out_w],
            life_r,
        )
    except BaseException:
        pass
    try:
        os.write(status_w, struct.pack(">?i", setup_done, code))
    finally:
        os._exit(0)


def _candidate(limits: dict, isolated: bool, call_r: int, reply_w: int, out_w: int, setup_w: int) -> None:
    """pid 1 of the candidate's namespace: runs prompt + completion and answers calls. Never returns."""
    try:
        isolation.die_with_parent()
        os.setsid()  # kill(0, ...) reaches its own processes only; without namespaces, what the relay kills
        if isolated:
            isolation.mount_fresh(limits["tmp_bytes"])
        isolation.restrict(limits, isolated)
        isolation.stdio(out_w, {call_r, reply_w, setup_w})
        os.write(setup_w, b"1")  # setup done: from here on, what happens is the candidate's
        os.close(setup_w)
    except BaseException:
        os._exit(1)
    status = 1
    try:
        code = checker.read_frame(call_r)  # the first frame: prompt + completion, from the checker
        if code is not None:
            checker.serve(code.decode("utf-8", "surrogatepass"), call_r, reply_w)
        isolation.flush()
        status = 0
    except BaseException:
        pass
    os._exit(status)


def main() -> None:
    fd, settings = int(sys.argv[1]), json.loads(sys.argv[2])
    limits, isolated = settings["limits"], settings["isolated"]
    isolation.not_dumpable()
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # relays are reaped by the kernel
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
        pid = isolation.fork()
        if pid == 0:
            sock.close()
            _relay(json.loads(message), fds, limits, isolated)
        for received in fds:
            os.close(received)


if __name__ == "__main__":
    main()
