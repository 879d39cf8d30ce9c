"""Untrusted program execution: one long-lived bubblewrap sandbox running a zygote per worker.

WARNING: the programs are model output. They run only inside the sandbox, which has no network,
its own pid namespace, a read-only view of the interpreter and system libraries (nothing else of
the host's files), a private /tmp, a clean environment, no capabilities, rlimits and a wall clock.
`mode="none"` runs them with rlimits and a wall clock only, and says so loudly.

    with Sandbox(SandboxConfig()) as box:
        box.run(program_text, timeout=3.0)   # -> RunResult(status="passed", ...)

The per-program isolation (fresh namespaces, tmpfs, rlimits, the completion token) lives in
`mmpt/eval/zygote.py`, which runs inside the sandbox; see its docstring for the design.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MODES = ("auto", "bwrap", "none")
STATUSES = ("passed", "failed", "timeout", "error")
ZYGOTE = Path(__file__).with_name("zygote.py")
CHECKER = Path(__file__).with_name("checker.py")
WIRE = Path(__file__).with_name("wire.py")
_INSIDE_ZYGOTE = "/mmpt/zygote.py"
_START_TIMEOUT_S = 30.0  # the zygote's interpreter start on a loaded machine
_ANSWER_GRACE_S = 10.0  # the zygote enforces the time limit; this only catches a wedged zygote
_SIGXCPU = 24


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided here."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one program run; the same for every program of an `mmpt execute` run."""

    mode: str = "auto"  # auto|bwrap: bubblewrap (required); none: no isolation (loud warning)
    memory_bytes: int = 4 << 30  # RLIMIT_AS of each process of a program
    nproc: int = 32  # RLIMIT_NPROC: processes of the sandbox user (fork bombs stop here)
    fsize_bytes: int = 16 << 20  # RLIMIT_FSIZE: largest file a program may write
    nofile: int = 256  # RLIMIT_NOFILE
    tmp_bytes: int = 64 << 20  # size of the fresh /tmp (and /dev/shm) tmpfs
    output_bytes: int = 4096  # captured stdout+stderr kept per program; the rest is discarded
    ro_binds: tuple[str, ...] = ()  # extra host paths the programs may read (read-only)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class SplitProgram:
    """A program judged in two processes (`mmpt/eval/checker.py`): the candidate's runs `candidate`
    (prompt + completion) and answers calls; the checker's runs the trusted `setup` (the prompt's
    imports and helpers) and `test`, with each name in `proxies` forwarding calls to the candidate."""

    candidate: str
    setup: str
    test: str
    proxies: tuple[str, ...]
    ahead: tuple[str, ...] = ()  # encoded requests (hex) of calls with literal arguments, sent first


@dataclass(frozen=True)
class RunResult:
    status: str  # one of STATUSES
    detail: str  # short reason: the exception, the exit code, the limit hit
    seconds: float  # wall time of the program, measured inside the sandbox
    output: str = ""  # the program's stdout+stderr, capped


def resolve_mode(mode: str) -> str:
    """ "bwrap" or "none" for a requested mode; refuses when bubblewrap is needed but missing."""
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {MODES}, got {mode!r}")
    if mode == "none":
        print(
            "WARNING: --sandbox none: model-generated code runs WITHOUT isolation on this machine "
            "(no namespaces, full file system and network access). Use only on a disposable host.",
            file=sys.stderr,
        )
        return "none"
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable(
            "bubblewrap (`bwrap`) is not installed: install the `bubblewrap` package "
            "(e.g. `apt-get install bubblewrap`), or pass `--sandbox none` to run untrusted code without isolation"
        )
    return "bwrap"


def _interpreter() -> str:
    """The real binary behind this Python (a venv's `python` is a link to its base installation's)."""
    return os.path.realpath(sys.executable)


def _bwrap_command(config: SandboxConfig) -> list[str]:
    """bubblewrap arguments for the long-lived zygote sandbox."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000"]
    # the zygote needs these inside its user namespace to give each program fresh mount and pid
    # namespaces; each program drops all of them before it runs
    args += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"]
    args += ["--die-with-parent", "--new-session", "--clearenv", "--setenv", "PYTHONHASHSEED", "0"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    # the interpreter: the base installation only. A venv's packages are not the programs' business,
    # and a venv may live under /tmp, which the sandbox replaces with its own tmpfs.
    wanted = {sys.base_prefix, os.path.dirname(_interpreter()), *config.ro_binds}
    for path in sorted(wanted):
        real = os.path.realpath(path)
        if not real.startswith("/usr/"):
            args += ["--ro-bind", real, real]
        if real != os.path.abspath(path):
            args += ["--symlink", real, os.path.abspath(path)]
    for module in (ZYGOTE, CHECKER, WIRE):  # /mmpt/zygote.py imports the other two from its folder
        args += ["--ro-bind", str(module), f"/mmpt/{module.name}"]
    args += ["--dev", "/dev", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp"]
    return args


def _remove_stale(root: Path) -> None:
    """Remove empty cgroups left by sandboxes of processes that died without closing them."""
    for group in root.glob("mmpt-sandbox-*"):
        pid = group.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                group.rmdir()
            except OSError:
                pass


def _make_cgroups(name: str, pids_max: int, memory_bytes: int) -> list[Path]:
    """Per-sandbox pids and memory cgroups where this host lets us make them, else [].

    RLIMIT_NPROC does not bind a sandbox whose user maps to root outside (the kernel exempts
    root's processes), so a pids cgroup is what stops a fork bomb there; the memory cgroup bounds
    a program's processes together (RLIMIT_AS bounds each one).
    """
    made = []
    v2 = Path("/sys/fs/cgroup")
    settings = (
        [(v2, {"pids.max": pids_max, "memory.max": memory_bytes})]
        if (v2 / "cgroup.controllers").exists()
        else [(v2 / "pids", {"pids.max": pids_max}), (v2 / "memory", {"memory.limit_in_bytes": memory_bytes})]
    )
    for root, files in settings:
        _remove_stale(root)
        group = root / name
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            for key, value in files.items():
                (group / key).write_text(str(value))
            made.append(group)
        except OSError:
            group.rmdir()
    return made


class Sandbox:
    """One worker's sandbox: start once, `run` programs one at a time, `close` at the end."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        # `mmpt execute` calls resolve_mode once per run (and warns there for "none")
        self.isolated = self.config.mode != "none" and resolve_mode(self.config.mode) == "bwrap"
        self._proc: subprocess.Popen | None = None
        self._cgroups: list[Path] = []
        self._start()

    # --- life cycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        c = self.config
        settings = {
            "isolated": self.isolated,
            "limits": {
                "memory_bytes": c.memory_bytes,
                "nproc": c.nproc,
                "fsize_bytes": c.fsize_bytes,
                "nofile": c.nofile,
                "tmp_bytes": c.tmp_bytes,
                "output_bytes": c.output_bytes,
            },
        }
        req_r, self._req_w = os.pipe()
        self._ans_r, ans_w = os.pipe()
        settings["fds"] = [req_r, ans_w]  # inherited with the same numbers (bwrap passes them on)
        python = [_interpreter() if self.isolated else sys.executable, "-s", "-B"]
        if self.isolated:
            command = _bwrap_command(c) + ["--", *python, _INSIDE_ZYGOTE, json.dumps(settings)]
            env = {}
        else:
            command = [*python, str(ZYGOTE), json.dumps(settings)]
            env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}

        # zygote + relay + runner, then the program's own processes
        self._cgroups = _make_cgroups(f"mmpt-sandbox-{os.getpid()}-{id(self)}", c.nproc + 4, c.memory_bytes)
        procs = [str(g / "cgroup.procs") for g in self._cgroups]

        def enter_cgroups() -> None:  # in the child, before bwrap starts
            for path in procs:
                with open(path, "w") as f:
                    f.write("0")

        self._proc = subprocess.Popen(
            command,
            preexec_fn=enter_cgroups if procs else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            pass_fds=(req_r, ans_w),
            close_fds=True,
        )
        os.close(req_r)
        os.close(ans_w)
        hello = self._receive(_START_TIMEOUT_S)
        if not hello or not hello.get("ready"):
            self.close()
            raise SandboxUnavailable(
                "the sandbox did not start (bubblewrap needs user namespaces; as root it also needs "
                "--cap-add): run `mmpt doctor`, or pass --sandbox none on a disposable host"
            )

    def close(self) -> None:
        """Stop the zygote; its sandbox and everything in it go with it."""
        if self._proc is None:
            return
        for fd in (self._req_w, self._ans_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self._proc.kill()
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._proc = None
        for group in self._cgroups:
            for _ in range(100):  # the kernel empties it as the killed processes go
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)
        self._cgroups = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The pid of the sandbox's outermost process (bwrap, or the zygote without it)."""
        return self._proc.pid if self._proc else None

    # --- protocol -----------------------------------------------------------------------------

    def _receive(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        buf = b""
        need = 4
        header_done = False
        while True:
            while len(buf) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._ans_r], [], [], left)[0]:
                    return None
                chunk = os.read(self._ans_r, need - len(buf))
                if not chunk:
                    return None
                buf += chunk
            if header_done:
                return json.loads(buf)
            (need,) = struct.unpack(">I", buf)
            buf, header_done = b"", True

    def run(self, program: str | SplitProgram, timeout: float) -> RunResult:
        """Run one program (all in one process, or split) within `timeout` wall seconds; never
        raises for anything the program does."""
        if self._proc is None:
            self._start()
        token = secrets.token_hex(16)
        what = {"code": program} if isinstance(program, str) else {"split": program.__dict__}
        request = json.dumps({**what, "timeout": timeout, "token": token}).encode()
        try:
            data = memoryview(struct.pack(">I", len(request)) + request)
            while data:
                data = data[os.write(self._req_w, data) :]
            answer = self._receive(timeout + _ANSWER_GRACE_S)
        except OSError as e:
            answer = {"error": f"sandbox pipe: {e}"}
        if answer is None or "error" in answer:
            # the zygote is gone or wedged: start a fresh sandbox for the next program
            self.close()
            detail = answer["error"] if answer else "the sandbox stopped answering"
            return RunResult("error", detail[:200], 0.0)
        return judge(answer, token)


def judge(answer: dict, token: str) -> RunResult:
    """Verdict of one zygote answer: a pass needs the run's token, written after the tests."""
    result, code, seconds = answer["result"], answer["exit"], answer["seconds"]
    output = answer.get("output", "")
    if answer["timed_out"]:
        return RunResult("timeout", "wall-clock limit", seconds, output)
    if result == "T" + token:
        return RunResult("passed", "", seconds, output)
    if code == 128 + _SIGXCPU:
        return RunResult("timeout", "CPU limit", seconds, output)
    if result.startswith("F"):
        return RunResult("failed", result[1:200], seconds, output)
    if code > 128:
        return RunResult("failed", f"killed by signal {code - 128}", seconds, output)
    return RunResult("failed", f"exit code {code} without the completion signal", seconds, output)
