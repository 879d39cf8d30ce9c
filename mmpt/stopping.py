"""Save-and-stop requests to a training run: signals from its first line on, and a launcher that is gone.

A request is a flag (`StopFlag`): every rank reads it at the end of a step, and the ranks' vote
makes all of them save at the same step and exit 0 (mmpt/train.py). Three sources set it:
- SIGTERM, SIGINT and the configured save signal. `catch_early` installs flag-only handlers on the
  trainer's first line, before the seconds of torch/transformers/DeepSpeed imports, in which a
  signal's default action would kill the rank; `StopFlag` then takes over what they caught.
- The launcher gone (`watch_launcher`): the `deepspeed` runner on one node installs no signal
  handler, so `kill -TERM <runner>` ends it alone, and a SIGKILLed `torchrun` leaves its workers
  running in their own sessions; a rank that trained on would write into the same output_dir
  beside the next run. Each rank watches its launcher's processes (pidfds: the kernel reports
  their exit) and asks for a save when one is gone.
- Where the launcher has a mechanism of its own it is used as it is: `deepspeed`'s launch.py and
  `torchrun` pass SIGTERM/SIGINT on to the ranks, srun passes the job's signals (docs/slurm.md).
Outside the loop a request must not wait for a step that never comes: inside
`StopFlag.interruptible()` (the final export) it raises `StopRequested` in the main thread.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator

from mmpt.config import config_from_argv

# what each launcher's processes look like from a rank: substrings of their command lines
LAUNCHER_COMMANDS = {
    "deepspeed": ("deepspeed.launcher.launch", "deepspeed.launcher.runner", "bin/deepspeed"),
    "torchrun": ("torch.distributed.run", "torch.distributed.launch", "bin/torchrun"),
}

# signal number -> the handler it had before `catch_early`; the names caught since, in order
_early_previous: dict[int, object] = {}
_early_caught: list[str] = []


class StopRequested(Exception):
    """A save request arrived inside `StopFlag.interruptible()`."""


def _early_handler(signum, frame) -> None:
    _early_caught.append(signal.Signals(signum).name)


def catch_early(argv: list[str]) -> None:
    """Flag-only handlers for SIGTERM, SIGINT and the run's save signal, before the heavy imports.

    The save signal comes from the command line or the config file (`config_from_argv`, which reads
    YAML only); when they cannot be read, SIGTERM and SIGINT alone (the run then fails on that).
    """
    save_signal = "SIGTERM"
    if not {"-h", "--help", "--dry-run"} & set(argv):  # those print and exit in `main`
        try:
            save_signal = config_from_argv(argv).save_signal
        except Exception:  # a bad command line is `main`'s to report, with its message
            pass
    for name in dict.fromkeys(("SIGTERM", "SIGINT", save_signal)):
        signum = getattr(signal, name)
        if signum not in _early_previous:
            _early_previous[signum] = signal.signal(signum, _early_handler)


class StopFlag:
    """Set by a save request: SIGTERM (a scheduler's preemption or time limit, `scancel`, a launcher
    passing on its own), SIGINT (Ctrl-C reaches the launcher's whole process group), the configured
    save signal (Slurm's `--signal=USR1@T`), or `request` (the launcher is gone). Every rank acts on
    it at the same step: it finishes the step, saves and exits 0. A repeated signal (the launcher's
    own SIGTERM after the group's) asks nothing more; the launcher's grace period bounds the save.
    """

    def __init__(self, save_signal: str) -> None:
        self.raised = False
        self.name = ""  # what asked first: a signal's name, or why
        self._interrupt = False
        names = dict.fromkeys(("SIGTERM", "SIGINT", save_signal))
        self._previous = {}
        for n in names:
            signum = getattr(signal, n)
            before = signal.signal(signum, self._handler)
            self._previous[signum] = _early_previous.pop(signum, before)  # what was there before mmpt
        # what the early handlers caught: a signal of this run's set is a request; any other (the
        # config named another save signal) gets the default action it would have had
        caught, _early_caught[:] = list(_early_caught), []
        for signum, handler in list(_early_previous.items()):
            signal.signal(signum, handler)
            del _early_previous[signum]
            if signal.Signals(signum).name in caught:
                signal.raise_signal(signum)
        for name in caught:
            if getattr(signal, name) in self._previous:
                self.request(name)

    def _handler(self, signum, frame) -> None:
        self.request(signal.Signals(signum).name)
        if self._interrupt:
            raise StopRequested(self.name)

    def request(self, why: str) -> None:
        """Ask for a save (from any thread); inside `interruptible()` the main thread stops at once."""
        self.raised = True
        self.name = self.name or why
        if self._interrupt and threading.current_thread() is not threading.main_thread():
            _thread.interrupt_main(signal.SIGTERM)  # runs `_handler` in the main thread, which raises

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block a request (or one that came before it) raises `StopRequested`."""
        self._interrupt = True
        try:
            if self.raised:
                raise StopRequested(self.name)
            yield
        finally:
            self._interrupt = False

    def close(self) -> None:
        """Give the signals back to their previous handlers (another run in the same process)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# ---- the launcher's processes ------------------------------------------------------------------


def launcher_processes(launcher: str) -> list[tuple[int, str]]:
    """(pid, command line) of the processes above this one that belong to `launcher`, nearest first:
    the `deepspeed` runner and its launch.py, the `torchrun` agent; `srun`'s slurmstepd. Others
    (mpiexec, a plain `python`) have none to watch."""
    import psutil  # inside: every command imports this module (its early signal handlers) and few watch

    if launcher == "slurm":
        parent = psutil.Process().parent()
        return [(parent.pid, "slurmstepd")] if parent is not None and parent.name() == "slurmstepd" else []
    patterns = LAUNCHER_COMMANDS.get(launcher, ())
    found, p = [], psutil.Process().parent()
    while p is not None and patterns:
        try:
            cmdline = " ".join(p.cmdline())
        except psutil.Error:
            break
        if not any(pattern in cmdline for pattern in patterns):
            break
        found.append((p.pid, cmdline))
        p = p.parent()
    return found


def watch_launcher(stop: StopFlag, launcher: str) -> list[tuple[int, str]]:
    """Ask `stop` for a save as soon as one of this rank's launcher processes has exited, whatever
    ended it; returns the processes watched. A daemon thread waits on their pidfds (Linux 5.3+;
    elsewhere it polls their pids once a second)."""
    watched = launcher_processes(launcher)
    if not watched:
        return []
    fds = {}
    for pid, cmdline in watched:
        try:
            fds[os.pidfd_open(pid)] = (pid, cmdline)
        except ProcessLookupError:
            stop.request(f"the launcher process {pid} is gone")
            return watched
        except (AttributeError, OSError):
            fds = {}  # no pidfds here: poll instead
            break

    def gone() -> tuple[int, str]:
        if fds:
            ready, _, _ = select.select(list(fds), [], [])
            return fds[ready[0]]
        while True:
            for pid, cmdline in watched:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return pid, cmdline
            threading.Event().wait(1.0)

    def watch() -> None:
        pid, cmdline = gone()
        print(
            f"mmpt train: the launcher process {pid} ({cmdline[:80]}) is gone: saving and stopping", file=sys.stderr, flush=True
        )
        stop.request(f"launcher process {pid} gone")

    threading.Thread(target=watch, daemon=True, name="mmpt-launcher-watch").start()
    return watched
