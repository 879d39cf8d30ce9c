"""The candidates' zygote: a pre-warmed Python, forked at the sandbox's start, that forks the candidate processes.

Forked by `zygote.py` before that zygote read any request (with the standard library imported
and warmed up, and no descriptor but its socket), it never holds a test, a token, a task's spec or
a checker's state: a candidate forked from it inherits none of them. It
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

import checker  # beside this file (in /mmpt inside the sandbox), with frames.py and wire.py
import isolation

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


class PidNamespaces:
    """A pid namespace per candidate, of which it is pid 1. Where this zygote may `setns` back into
    its own pid namespace (a privileged sandbox), each fork is preceded by `unshare`; where it may
    not (bubblewrap nests the sandbox's user namespace below the one that owns its pid namespace),
    a relay process makes the namespace and forks the candidate into it."""

    def __init__(self, isolated: bool) -> None:
        self.isolated = isolated
        self.own = os.pidfd_open(os.getpid())
        self.relayed = False
        if isolated:
            try:
                isolation.check(isolation._libc.setns(self.own, isolation.CLONE_NEWPID), "setns(own pid namespace)")
            except PermissionError:
                self.relayed = True

    def fork(self, candidate, handed: list[int], life_r: int) -> int:
        """Start `candidate()` as pid 1 of a new pid namespace; the pid to wait for (the candidate's,
        or its relay's, which exits with the candidate's status once its namespace is empty and
        kills it when the lifeline `life_r` closes first). `handed`: what only the candidate keeps."""
        if self.isolated and not self.relayed:
            isolation.pid_namespace_for_next_child(self.own)
        pid = isolation.fork()
        if pid == 0:
            if self.relayed:
                _relay(candidate, handed, life_r)
            candidate()
        return pid


def _relay(candidate, handed: list[int], life_r: int) -> None:
    """Between the candidates' zygote and a candidate: owns its pid namespace. Never returns."""
    try:
        isolation.die_with_parent()
        isolation.unshare(isolation.CLONE_NEWPID)
        pid = isolation.fork()
        if pid == 0:
            candidate()
        for fd in handed:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        if pidfd not in select.select([pidfd, life_r], [], [])[0]:  # the run is over
            os.kill(pid, signal.SIGKILL)
        _, wstatus = os.waitpid(pid, 0)  # pid 1 is reaped once its namespace is empty
        code = os.waitstatus_to_exitcode(wstatus)
        os._exit(code if code >= 0 else 128 - code)  # a signal as a shell reports it
    except BaseException:
        os._exit(1)  # the candidate's setup flag says whether any of its code ran


def _run(settings: dict, namespaces: PidNamespaces, head: dict, fds: list[int]) -> None:
    """One candidate: fork it, wait for it or the lifeline, kill it, tell the checker how it ended."""
    call_r, reply_w, out_w, status_w, life_r, *held = fds
    limits = {**settings["limits"], "cpu_s": head["cpu_s"]}
    setup_r, setup_w = os.pipe()

    def candidate() -> None:
        for fd in (status_w, life_r, setup_r, namespaces.own, *held):
            os.close(fd)
        _candidate(settings, limits, call_r, reply_w, out_w, setup_w)

    pid = namespaces.fork(candidate, [call_r, reply_w, out_w, setup_w], life_r)
    for fd in (call_r, reply_w, out_w, setup_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    ended_by_itself = pidfd in select.select([pidfd, life_r], [], [])[0]
    if not ended_by_itself and not namespaces.relayed:  # the run is over: the candidate (pid 1, so its namespace) goes
        os.kill(pid, signal.SIGKILL)
    if not settings["isolated"]:  # no pid namespace: its process group is what it started
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _, wstatus, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(wstatus)
    if namespaces.relayed and code > 128:
        code = 128 - code
    if code == -signal.SIGKILL and usage.ru_utime + usage.ru_stime >= limits["cpu_s"]:
        code = -signal.SIGXCPU  # pid 1 ignores SIGXCPU: its CPU limit ends it with the hard limit's SIGKILL
    setup_done = os.read(setup_r, 1) == b"1"
    try:
        os.write(status_w, checker.STATUS.pack(setup_done, code))
    except OSError:  # the checker is gone (the run is over)
        pass
    for fd in (pidfd, setup_r, status_w, life_r, *held):
        os.close(fd)


def serve(sock: socket.socket, settings: dict) -> None:
    """Fork a candidate per message on `sock` until the zygote is gone. Runs in the process
    `zygote.py` forked for it: the standard library imported and warmed up, no descriptor but `sock`."""
    isolation.not_dumpable()
    isolation.die_with_parent()
    namespaces = PidNamespaces(settings["isolated"])
    gc.freeze()  # see zygote.main
    sock.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1024, MAX_FDS)
        except OSError:
            return
        if not message:  # the zygote is gone
            return
        _run(settings, namespaces, json.loads(message), fds)
