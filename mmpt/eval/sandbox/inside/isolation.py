"""Per-program isolation inside the sandbox: namespaces, fresh mounts, rlimits, capabilities, cgroups.

Standard library only: imported by both in-sandbox zygotes (`zygote.py`, `candidates.py`), which
see no project file but their neighbours in /mmpt. Every program (a checker, a candidate, a
one-process runner) gets, before any of its code runs:

- a cgroup of its own in each hierarchy the host delegated (`Cgroups`): its own pid limit (fork
  bombs stop there), its own memory limit, and `cgroup.kill` at the end of its run, which kills
  everything it started wherever it went (a new session, a cleared death signal);
- its own mount namespace with fresh tmpfs /tmp and /dev/shm; candidates and runners also get a
  pid namespace of their own, of which they are pid 1;
- no way to make an object another program could reach: no socket but a socketpair, no SysV IPC,
  no message queue, no key (`deny_shared_objects`; or own IPC and network namespaces);
- rlimits, no_new_privs, no capabilities, a clean environment (`restrict`).
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x20000000, 0x08000000, 0x40000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
# System calls that make an object another program could reach (see `deny_shared_objects`), per
# architecture: (AUDIT_ARCH_*, numbers). socket (socketpair stays: its pair is private), SysV
# shm/sem/msg, POSIX message queues, io_uring (it makes sockets itself), add_key/request_key/keyctl
# (a user's keyrings outlive its processes).
_DENIED = {
    "x86_64": (0xC000003E, (41, 29, 30, 31, 64, 65, 66, 67, 68, 69, 70, 71, 220, 240, 241, 242, 243, 244, 245,
                            425, 426, 427, 248, 249, 250)),
    "aarch64": (0xC00000B7, (198, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 180, 181, 182, 183,
                             184, 185, 425, 426, 427, 217, 218, 219)),
}  # fmt: skip
# every program's namespaces (runners and candidates add CLONE_NEWPID): where the system calls
# above cannot be denied (another architecture), their own IPC and network namespaces instead
NAMESPACES = CLONE_NEWNS if os.uname().machine in _DENIED else CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x2, 0x4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SYS_CAPSET = 126  # x86_64; aarch64 is 91 (picked below)

_libc = ctypes.CDLL(None, use_errno=True)


def check(ret: int, what: str) -> None:
    """OSError with errno for a failed libc call."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits."""
    check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


def not_dumpable() -> None:
    """Nobody (a program included) may trace this process or read its memory."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def unshare(flags: int) -> None:
    check(_libc.unshare(flags), f"unshare({flags:#x})")


def fork() -> int:
    """os.fork, waiting out EAGAIN: a killed fork bomb's processes leave the pids cgroup gradually."""
    for _ in range(500):
        try:
            return os.fork()
        except BlockingIOError:
            time.sleep(0.01)
    return os.fork()


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable capability sets."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words, all zero
    nr = 91 if os.uname().machine == "aarch64" else SYS_CAPSET
    check(_libc.syscall(nr, header, data), "capset")


def mount_fresh(tmp_bytes: int) -> None:
    """Fresh /tmp and /dev/shm in this process's (new) mount namespace, and cwd /tmp."""
    check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    opts = f"size={tmp_bytes},mode=1777".encode()
    for where in (b"/tmp", b"/dev/shm"):
        check(_libc.mount(b"tmpfs", where, b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"mount tmpfs {where!r}")
    os.chdir("/tmp")


def restrict(limits: dict, isolated: bool) -> None:
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
    check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    if isolated:
        drop_capabilities()
        deny_shared_objects()
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"})


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def deny_shared_objects() -> None:
    """A seccomp filter (inherited, never lifted): the system calls in `_DENIED` fail with EPERM.

    What they make (a socket that can be named: abstract, on a path or on the sandbox's loopback;
    a SysV IPC object; a message queue; a key) is what one program could leave for, or reach in,
    another; pipes, socketpairs, files in its own /tmp and /dev/shm stay. This does what an IPC and
    a network namespace per program would (no such object of one program is visible to another)
    and more (keys, which no namespace separates), without their cost per program: the sandbox's
    own namespaces already keep the host out. Without `_DENIED` numbers for this architecture,
    the programs get those namespaces instead (`NAMESPACES`).
    """
    if os.uname().machine not in _DENIED:
        return
    arch, numbers = _DENIED[os.uname().machine]
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, deny, kill = 0x7FFF0000, 0x00050000 | 1, 0x80000000  # SECCOMP_RET_ALLOW, ERRNO(EPERM), KILL_PROCESS
    code = [(load, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill), (load, 0, 0, 0)]  # seccomp_data.arch, .nr
    code.append((jge, len(numbers) + 1, 0, 0x40000000))  # x32 system calls: denied
    code += [(jeq, len(numbers) - i, 0, nr) for i, nr in enumerate(numbers)]
    code += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    filters = (_Filter * len(code))(*[_Filter(*c) for c in code])
    program = _Program(len(code), filters)
    check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "prctl(SECCOMP)")


def stdio(out_w: int, keep: set[int]) -> None:
    """stdin /dev/null, stdout+stderr the output pipe; every other descriptor but `keep` closed."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    fds = sorted({0, 1, 2, *keep})
    for lo, hi in zip(fds, fds[1:] + [1 << 16]):
        os.closerange(lo + 1, hi)


def relay(procs: list[int], isolated: bool, start, handed: list[int], life_r: int) -> tuple[int, bool]:
    """A relay's work: join the program's cgroups, enter new namespaces (pid included), fork the
    program's pid 1, which runs `start(setup_w)` (it writes b"1" on setup_w once its setup is done,
    before any of the program's code runs), close the descriptors `handed` to it, and wait for it
    (`wait_or_kill`). Returns (its exit status, -N for signal N; whether its setup was done)."""
    join(procs)
    if isolated:
        unshare(NAMESPACES | CLONE_NEWPID)
    setup_r, setup_w = os.pipe()
    pid = fork()
    if pid == 0:
        os.close(setup_r)
        start(setup_w)
    for fd in (*handed, setup_w):
        os.close(fd)
    code = wait_or_kill(pid, life_r, isolated)
    return code, os.read(setup_r, 1) == b"1"


def wait_or_kill(pid: int, life_r: int, isolated: bool) -> int:
    """The exit status of child `pid` (-N when killed by signal N); it is killed (and with it its
    pid namespace, or its process group without one) when the lifeline `life_r` closes first."""
    pidfd = os.pidfd_open(pid)
    if pidfd not in select.select([pidfd, life_r], [], [])[0]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, wstatus = os.waitpid(pid, 0)
    if not isolated:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return os.waitstatus_to_exitcode(wstatus)


def flush() -> None:
    """Flush stdout and stderr, whatever a program did to them."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def join(procs: list[int]) -> None:
    """Move this process into the cgroups whose `cgroup.procs` files `procs` are open on; closes them."""
    for fd in procs:
        os.write(fd, b"0")
        os.close(fd)


class Cgroups:
    """Per-program cgroups under the sandbox's own, one per delegated hierarchy.

    `dirs` maps a hierarchy ("v2", "pids", "memory") to an open directory descriptor of the
    sandbox's cgroup there (the host made it and passed the descriptor in: the sandbox mounts no
    cgroup file system). In the v2 hierarchy `controllers` lists those enabled for the children.
    """

    def __init__(self, dirs: dict[str, int], controllers: list[str], limits: dict) -> None:
        self.dirs, self.limits = dirs, limits
        self.v2_files = {"pids": "pids.max", "memory": "memory.max"}
        self.v2_files = {c: f for c, f in self.v2_files.items() if c in controllers}
        self.count = 0
        self.dying: list[str] = []  # killed, not yet removed (rmdir waits for the last process)

    def make(self, memory_limit: bool = True) -> tuple[str, list[int]]:
        """A new cgroup with the program limits: (its name, descriptors to `join` it with).
        Without `memory_limit` (a checker: trusted code, a move into a cgroup costs latency) it
        stays out of the v1 memory hierarchy, bounded by the sandbox's cgroup and RLIMIT_AS there."""
        self.count += 1
        name = f"p{self.count}"
        nproc, memory = self.limits["nproc"], self.limits["memory_bytes"]
        settings = {"v2": {f: nproc if c == "pids" else memory for c, f in self.v2_files.items()}}
        settings.update(pids={"pids.max": nproc}, memory={"memory.limit_in_bytes": memory})
        procs = []
        for kind, fd in self.dirs.items():
            if kind == "memory" and not memory_limit:
                continue
            os.mkdir(name, dir_fd=fd)
            for key, value in settings[kind].items():
                _write_at(fd, f"{name}/{key}", str(value).encode())
            procs.append(os.open(f"{name}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd))
        return name, procs

    def kill(self, name: str) -> None:
        """Kill every process of cgroup `name` (v2's cgroup.kill; with v1 only, each listed pid)."""
        if "v2" in self.dirs:
            _write_at(self.dirs["v2"], f"{name}/cgroup.kill", b"1")
        elif self.dirs:
            fd = next(iter(self.dirs.values()))
            for _ in range(100):  # v1 has no atomic kill: until nothing is left (forks race the kill)
                pids = _read_at(fd, f"{name}/cgroup.procs").split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.dying.append(name)

    def sweep(self) -> None:
        """Remove the killed cgroups whose processes are all gone."""
        still = []
        for name in self.dying:
            for fd in self.dirs.values():
                try:
                    os.rmdir(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError:  # EBUSY: a process is still exiting
                    still.append(name)
                    break
        self.dying = still


def _write_at(dir_fd: int, path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read_at(dir_fd: int, path: str) -> str:
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        return os.read(fd, 1 << 20).decode()
    finally:
        os.close(fd)
