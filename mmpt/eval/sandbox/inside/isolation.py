"""Per-program isolation inside the sandbox: namespaces, fresh mounts, an unprivileged user, rlimits, a seccomp filter.

Standard library only: imported by both in-sandbox zygotes (`zygote.py`, `candidates.py`), which
see no project file but their neighbours in /mmpt. Every process that runs a program's code (a
candidate) gets, before any of it runs:

- pid 1 of a pid namespace of its own (everything it starts dies with it), and its own mount and
  IPC namespaces: fresh tmpfs /tmp and /dev/shm, no SysV or POSIX IPC object any other program
  could see, before or after;
- an unprivileged user: with a privileged sandbox (the caller is root) it drops to a host uid no
  other sandbox uses; in a user namespace (an unprivileged caller) it keeps the caller's uid; no
  capabilities either way, no new privileges;
- rlimits (CPU, address space, processes, file size, descriptors, no core files);
- a seccomp filter (`deny`): no user namespace nor any other new namespace (`unshare`, `setns`,
  `clone` with a namespace flag; `clone3` answers ENOSYS so the C library falls back to `clone`);
  no socket but a socketpair, and no socket name: no `bind`, `listen`, `accept`, `connect`, no
  `sendto` to an address, no `sendmsg` (which may carry one, or pass descriptors); no SysV IPC,
  message queue, key, io_uring, perf event, BPF program or userfaultfd; and nothing that reads or
  leaves state in what every program shares (the read-only files of the system): record locks,
  leases, `flock`, `mincore`, `fadvise`, `readahead`, inotify/fanotify watches.

Sockets need no network namespace per program (the sandbox has one of its own, without a device
but loopback): a socket gets a name only by `bind` or by autobind (a send on an unbound socket that
passes credentials), and a name is reached only by `connect`, a `sendto` or `sendmsg` to it, or
`accept` on a listening socket. Every one of these is refused, and a socketpair's ends are
reachable only through the descriptors of its own processes (none can be passed on), which die
with its pid namespace. An autobound name nobody can reach is no channel. So no program can leave
a socket for a later one or reach a concurrent one's, which a network namespace per program would
also give, at about 2 ms of CPU per program (half of it in the kernel's workers that take each
namespace down).

A checker (trusted tests) gets the same user and limits, without namespaces of its own or the
filter: no code but the benchmark's runs in it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x08000000
# every namespace flag of clone(2): a program may create none (CLONE_NEWUSER among them)
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
PROGRAM_NAMESPACES = CLONE_NEWNS | CLONE_NEWIPC  # with CLONE_NEWPID from its parent
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x2, 0x4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_MODE_FILTER = 2
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
       # a program that imports numpy starts one BLAS thread, not one per core (RLIMIT_NPROC counts threads)
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip

# System call numbers per architecture: (AUDIT_ARCH_*, {name: number}).
_SYSCALLS = {
    "x86_64": (0xC000003E, {
        "socket": 41, "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
        "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
        "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244,
        "mq_getsetattr": 245, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "add_key": 248, "request_key": 249, "keyctl": 250, "flock": 73, "mincore": 27, "fadvise64": 221,
        "readahead": 187, "inotify_init": 253, "inotify_init1": 294, "inotify_add_watch": 254,
        "fanotify_init": 300, "setns": 308, "unshare": 272, "perf_event_open": 298, "bpf": 321,
        "userfaultfd": 323, "bind": 49, "connect": 42, "listen": 50, "accept": 43, "accept4": 288, "sendmsg": 46,
        "sendmmsg": 307, "clone": 56, "clone3": 435, "fcntl": 72, "sendto": 44}),
    "aarch64": (0xC00000B7, {
        "socket": 198, "shmget": 194, "shmat": 196, "shmctl": 195, "shmdt": 197, "semget": 190, "semop": 193,
        "semctl": 191, "semtimedop": 192, "msgget": 186, "msgsnd": 189, "msgrcv": 188, "msgctl": 187,
        "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183, "mq_notify": 184,
        "mq_getsetattr": 185, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "add_key": 217, "request_key": 218, "keyctl": 219, "flock": 32, "mincore": 232, "fadvise64": 223,
        "readahead": 213, "inotify_init1": 26, "inotify_add_watch": 27, "fanotify_init": 262, "setns": 268,
        "unshare": 97, "perf_event_open": 241, "bpf": 280, "userfaultfd": 282, "bind": 200, "connect": 203,
        "listen": 201, "accept": 202, "accept4": 242, "sendmsg": 211, "sendmmsg": 269, "clone": 220, "clone3": 435,
        "fcntl": 25, "sendto": 206}),
}  # fmt: skip
# fcntl commands refused: record locks (classic and open-file-description), leases, directory notifications
_FCNTL_DENIED = (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}

_libc = ctypes.CDLL(None, use_errno=True)
# looked up once here, in the zygotes: ctypes resolves a function (a dlsym through every loaded
# library) and keeps it on first use, which would otherwise happen again in each program's processes
for _name in ("prctl", "unshare", "setns", "mount", "syscall"):
    getattr(_libc, _name)


def check(ret: int, what: str) -> None:
    """OSError with errno for a failed libc call."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (set after any change of user: that clears it)."""
    check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


def not_dumpable() -> None:
    """Nobody (a program included) may trace this process or read its memory."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def unshare(flags: int) -> None:
    check(_libc.unshare(flags), f"unshare({flags:#x})")


def pid_namespace_for_next_child(own_pidfd: int) -> None:
    """Make the next child of this process pid 1 of a new pid namespace. The namespace a previous
    call made is left first (`setns` to this process's own, by `own_pidfd`): one namespace per child."""
    check(_libc.setns(own_pidfd, CLONE_NEWPID), "setns(own pid namespace)")
    unshare(CLONE_NEWPID)


def fork() -> int:
    """os.fork, waiting out EAGAIN: a killed fork bomb's processes leave the pid limit gradually."""
    for _ in range(500):
        try:
            return os.fork()
        except BlockingIOError:
            time.sleep(0.01)
    return os.fork()


def mount_fresh(tmp_bytes: int) -> None:
    """Fresh /tmp and /dev/shm in this process's (new) mount namespace, and cwd /tmp."""
    check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    opts = f"size={tmp_bytes},mode=1777".encode()
    for where in (b"/tmp", b"/dev/shm"):
        check(_libc.mount(b"tmpfs", where, b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"mount tmpfs {where!r}")
    os.chdir("/tmp")


def enter_program_namespaces(tmp_bytes: int) -> None:
    """A candidate's own mount and IPC namespaces (its pid namespace came with its fork)."""
    unshare(PROGRAM_NAMESPACES)
    mount_fresh(tmp_bytes)


def restrict(limits: dict, user: dict | None, filtered: bool = True) -> None:
    """Setup of each process that runs code: rlimits; with `user` ({"uid", "gid"}: the isolated
    sandbox) that user, no capabilities and (where `filtered`) the seccomp filter; no new
    privileges; the death signal. (Its environment is the zygotes' own, `ENV`: see `clean_environment`.)"""
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_NPROC", limits["nproc"]),
        ("RLIMIT_FSIZE", limits["fsize_bytes"]),
        ("RLIMIT_NOFILE", limits["nofile"]),
        ("RLIMIT_CORE", 0),
    ):
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU first, SIGKILL a second later
        resource.setrlimit(getattr(resource, name), (value, hard))
    if user is not None:
        drop_privileges(user["uid"], user["gid"])
    die_with_parent()
    # no execve can gain privileges from here on (setuid/setgid bits and file capabilities are
    # ignored), so the capability bounding set needs no dropping
    check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    if user is not None and filtered:
        deny()


def clean_environment() -> None:
    """The environment every program starts with (set once in each zygote: forks inherit it)."""
    os.environ.clear()
    os.environ.update(ENV)


def drop_privileges(uid: int, gid: int) -> None:
    """Become `uid`/`gid` (when not already) with no supplementary groups and no capabilities."""
    if (os.getuid(), os.getgid()) != (uid, gid):
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # leaves no capability from here on
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words, all zero
    check(_libc.syscall(SYS_CAPSET[os.uname().machine], header, data), "capset")


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Instruction))]


def _filter() -> _Program:
    """The seccomp program of `deny` for this machine's architecture (see the module docstring)."""
    arch, nr = _SYSCALLS[os.uname().machine]
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, JMP|JSET|K, RET|K
    allow, eperm, enosys, kill = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38, 0x80000000
    denied = [n for name, n in nr.items() if name not in ("clone", "clone3", "fcntl", "sendto")]
    # (code, jump if true, jump if false, k), jumps to labels; seccomp_data: nr at 0, arch at 4, args at 16 + 8i
    code = [(load, None, None, 4), (jeq, None, "kill", arch), (load, None, None, 0), (jge, "deny", None, 0x40000000)]
    code += [(jeq, "deny", None, n) for n in denied]
    code += [(jeq, "enosys", None, nr["clone3"]), (jeq, "clone", None, nr["clone"]), (jeq, "fcntl", None, nr["fcntl"])]
    code += [(jeq, "sendto", None, nr["sendto"]), (ret, None, None, allow)]
    labels = {"sendto": len(code)}  # allowed without an address (send on a connected socket), else refused
    code += [
        (load, None, None, 48),
        (jeq, None, "deny", 0),
        (load, None, None, 52),
        (jeq, None, "deny", 0),
        (ret, None, None, allow),
    ]
    labels["clone"] = len(code)
    code += [(load, None, None, 16), (jset, "deny", None, CLONE_NEW_ANY), (ret, None, None, allow)]
    labels["fcntl"] = len(code)
    code += [(load, None, None, 24)] + [(jeq, "deny", None, cmd) for cmd in _FCNTL_DENIED] + [(ret, None, None, allow)]
    labels.update(deny=len(code), enosys=len(code) + 1, kill=len(code) + 2)
    code += [(ret, None, None, eperm), (ret, None, None, enosys), (ret, None, None, kill)]
    resolved = []
    for i, (op, jt, jf, k) in enumerate(code):
        offsets = [labels[j] - i - 1 if j else 0 for j in (jt, jf)]
        resolved.append(_Instruction(op, offsets[0], offsets[1], k))
    instructions = (_Instruction * len(resolved))(*resolved)
    program = _Program(len(resolved), instructions)
    program._keep = instructions  # the array must live as long as the program
    return program


_PROGRAM = _filter() if os.uname().machine in _SYSCALLS else None


def deny() -> None:
    """Install the seccomp filter (inherited by every child and thread, never lifted)."""
    if _PROGRAM is None:
        raise OSError(f"no seccomp filter for the architecture {os.uname().machine}")
    check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(_PROGRAM), 0, 0), "prctl(SECCOMP)")


def stdio(out_w: int, keep: set[int]) -> None:
    """stdin /dev/null, stdout+stderr the output pipe; every other descriptor but `keep` closed."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    fds = sorted({0, 1, 2, *keep})
    for lo, hi in zip(fds, fds[1:] + [1 << 16]):
        os.closerange(lo + 1, hi)


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
