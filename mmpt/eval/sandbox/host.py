"""Untrusted program execution: one long-lived bubblewrap sandbox running a zygote per worker.

WARNING: the programs are model output. They run only inside the sandbox, which has no network,
its own pid namespace, a read-only view of the interpreter and system libraries (nothing else of
the host's files), a private /tmp, a clean environment, no capabilities, rlimits and a wall clock.
`mode="none"` runs them with rlimits and a wall clock only, and says so loudly.

    with Sandbox(SandboxConfig()) as box:
        box.run(program_text, timeout=3.0)   # -> RunResult(status="passed", ...)

The per-program isolation (cgroups of its own, fresh namespaces and tmpfs, rlimits, a seccomp
filter) lives in `inside/isolation.py`, the completion token and the process layout in
`inside/zygote.py` and `candidates.py`, which run inside the sandbox; see their docstrings.
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
INSIDE = Path(__file__).with_name("inside")
ZYGOTE = INSIDE / "zygote.py"
# what runs inside the sandbox: the zygote, the candidates' zygote and the modules they import
IN_SANDBOX = tuple(INSIDE / f"{m}.py" for m in ("zygote", "candidates", "isolation", "checker", "wire"))
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
    """A program judged in two processes (`inside/checker.py`): the candidate's runs `candidate`
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
    # every namespace but the cgroup one (--unshare-all's list without it): the zygote makes each
    # program's cgroups beside its own, which a cgroup namespace rooted at its own would forbid
    args = ["bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    args += ["--uid", "1000", "--gid", "1000"]
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
    for module in IN_SANDBOX:  # /mmpt/zygote.py imports the others from its folder
        args += ["--ro-bind", str(module), f"/mmpt/{module.name}"]
    args += ["--dev", "/dev", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp"]
    return args


def _cgroup_roots() -> dict[str, Path]:
    """The hierarchies a sandbox's cgroups go in: "v2" (cgroup.kill; pid and memory limits too
    on a pure v2 host), and on a hybrid host the v1 "pids" and "memory" ones."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return {"v2": root}
    roots = {"v2": root / "unified"} if (root / "unified" / "cgroup.controllers").exists() else {}
    roots.update({kind: root / kind for kind in ("pids", "memory") if (root / kind / "cgroup.procs").exists()})
    return roots


def _remove_tree(group: Path, tries: int = 1) -> bool:
    """rmdir `group` and its child cgroups (bottom up); False where a process is still in one."""
    for _ in range(tries):
        try:
            for child in sorted((c for c in group.iterdir() if c.is_dir()), key=lambda c: -len(c.parts)):
                _remove_tree(child)
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.01)
    return False


def _remove_stale(root: Path) -> None:
    """Remove cgroups left by sandboxes of processes that died without closing them."""
    for group in root.glob("mmpt-sandbox-*"):
        pid = group.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_tree(group)


def _make_cgroups(name: str, config: SandboxConfig) -> tuple[dict[str, Path], list[str]]:
    """The sandbox's own cgroup in each hierarchy this host lets us use, with a leaf `zygote` for
    the sandbox's long-lived processes; the zygote makes one more per program beside it (see
    `inside/isolation.py`). Returns ({hierarchy: the sandbox's cgroup}, the v2 controllers
    enabled for its children); ({}, []) where cgroups cannot be made (then each program's pid
    namespace and rlimits still bound it).

    RLIMIT_NPROC does not bind a sandbox whose user maps to root outside (the kernel exempts
    root's processes), so a pids cgroup is what stops a fork bomb there. The sandbox's own limits
    leave room for one program dying while the next starts (each has the program limits).
    """
    made: dict[str, Path] = {}
    controllers: list[str] = []
    pids_max, memory = 4 * config.nproc + 16, 2 * config.memory_bytes + (1 << 30)
    for kind, root in _cgroup_roots().items():
        _remove_stale(root)
        group = root / name
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            if kind == "v2":
                available = (root / "cgroup.subtree_control").read_text().split()
                if available:  # a pure v2 host: its limits live here
                    controllers = [c for c in ("pids", "memory") if c in available]
                    (group / "cgroup.subtree_control").write_text(" ".join("+" + c for c in controllers))
                    for c in controllers:
                        (group / f"{c}.max").write_text(str(pids_max if c == "pids" else memory))
            elif kind == "pids":
                (group / "pids.max").write_text(str(pids_max))
            else:
                (group / "memory.limit_in_bytes").write_text(str(memory))
            (group / "zygote").mkdir()
            made[kind] = group
        except OSError:
            _remove_tree(group)
    return made, controllers


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
        groups, controllers = _make_cgroups(f"mmpt-sandbox-{os.getpid()}-{id(self)}", c)
        self._cgroups = list(groups.values())
        procs = [str(g / "zygote" / "cgroup.procs") for g in self._cgroups]
        # the zygote makes each program's cgroups through these descriptors: the sandbox mounts no
        # cgroup file system, and no program holds them
        dirs = {kind: os.open(g, os.O_RDONLY | os.O_DIRECTORY) for kind, g in groups.items()}
        settings["cgroups"] = {"dirs": dirs, "controllers": controllers} if dirs else None
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
            pass_fds=(req_r, ans_w, *dirs.values()),
            close_fds=True,
        )
        for fd in (req_r, ans_w, *dirs.values()):
            os.close(fd)
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
            if (group / "cgroup.kill").exists():  # whatever of the sandbox is left (v2)
                try:
                    (group / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        for group in self._cgroups:
            _remove_tree(group, tries=200)  # the kernel empties them as the killed processes go
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
        result = judge(answer, token)
        if result.status == "error":  # a setup step failed: the next program gets a fresh sandbox
            self.close()
        return result


def judge(answer: dict, token: str) -> RunResult:
    """Verdict of one zygote answer: a pass needs the run's token, written after the tests; a
    failure of the harness (a setup step) is an error, no verdict."""
    result, code, seconds = answer["result"], answer["exit"], answer["seconds"]
    output = answer.get("output", "")
    if answer.get("harness"):
        return RunResult("error", answer["harness"][:200], seconds, output)
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
