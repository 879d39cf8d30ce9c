"""A sandbox's cgroups, made under the caller's own cgroup (delegation) and owned by the process that made them.

Per sandbox, in each cgroup hierarchy this process may write to (v2; on a hybrid or v1 host the
v1 `pids` and `memory` ones too), under the cgroup this process is in:

    <own cgroup>/mmpt-box-<pid>-<random>/          the sandbox: limits of all of it
        zygote/                                     the zygote and the checkers it forks
        candidates/                                 the candidates' zygote and every candidate:
                                                    the program limits (pids, memory)

Made once per sandbox and reused by all its programs (each candidate is born in `candidates`:
no cgroup is made, joined or removed per program). The sandbox joins them itself through
`cgroup.procs` descriptors opened here (it mounts no cgroup file system).

Ownership: the maker holds an exclusive `flock` on the sandbox's cgroup directory for as long as
it lives, and removes it when the sandbox closes. Anyone else removes one only when it is provably
unused: its owner's lock is free (the owner is gone, whatever pid namespace it was in: the lock
is the kernel's, not a pid) and no process is left in it. Making a cgroup and taking its lock, and
sweeping, both happen under a lock on the parent directory, so a sweeper never sees a new cgroup
before its lock is taken.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "mmpt-box-"
LEAVES = ("zygote", "candidates")


def own_cgroups() -> dict[str, Path]:
    """The cgroup directory this process is in, per hierarchy a sandbox may use: "v2", "pids",
    "memory" (v1); only those whose file system is mounted here."""
    mounts = []  # (root inside the hierarchy, mount point, kinds)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup2":
            mounts.append((fields[3], fields[4], {"v2"}))
        elif fstype == "cgroup":
            mounts.append((fields[3], fields[4], {"pids", "memory"} & set(options)))
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        paths["v2" if controllers == "" else controllers] = path
    found = {}
    for root, point, kinds in mounts:
        for kind in kinds:
            own = paths.get(kind) or next((p for c, p in paths.items() if kind in c.split(",")), None)
            if own is None or kind in found or not (own == root or own.startswith(root.rstrip("/") + "/")):
                continue
            found[kind] = Path(point) / own[len(root) :].lstrip("/")
    return found


@dataclass
class SandboxCgroups:
    """One sandbox's cgroups (see the module docstring); empty where none could be made."""

    groups: dict[str, Path] = field(default_factory=dict)  # hierarchy -> the sandbox's cgroup
    locks: list[int] = field(default_factory=list)  # open directories holding the owner's flock

    def procs(self, leaf: str) -> list[int]:
        """Descriptors on the `cgroup.procs` files of `leaf` (one per hierarchy), to join it with."""
        return [os.open(group / leaf / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for group in self.groups.values()]

    def close(self) -> None:
        """Kill whatever is left in the sandbox's cgroups and remove them; then release the locks."""
        for group in self.groups.values():
            kill(group)
        for group in self.groups.values():
            remove(group, wait_s=5.0)
        for fd in self.locks:
            os.close(fd)
        self.groups, self.locks = {}, []


def make(limits: dict[str, dict[str, int]]) -> SandboxCgroups:
    """A sandbox's cgroups under this process's own, in every hierarchy where that works; limits
    per leaf ("" is the sandbox's own cgroup) as {leaf: {"pids": n, "memory": bytes}}. Sweeps
    provably unused ones of earlier sandboxes first."""
    made = SandboxCgroups()
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    for kind, parent in own_cgroups().items():
        try:
            parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(parent_fd, fcntl.LOCK_EX)
            sweep(parent)
            group = parent / name
            try:
                group.mkdir()
            except OSError:  # this hierarchy is not ours to write to
                continue
            lock = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: nobody else could see it yet
        finally:
            os.close(parent_fd)  # releases the parent's lock
        try:
            _set_up(kind, group, limits)
        except OSError:
            remove(group)
            os.close(lock)
            continue
        made.groups[kind], made.locks = group, [*made.locks, lock]
    return made


def _set_up(kind: str, group: Path, limits: dict[str, dict[str, int]]) -> None:
    """The leaves and the limits of one hierarchy (a v2 one gets limits only where its parent
    delegates the controllers; `cgroup.kill` it always has)."""
    controllers = []
    if kind == "v2":
        available = (group / "cgroup.controllers").read_text().split()
        controllers = [c for c in ("pids", "memory") if c in available]
        if controllers:
            (group / "cgroup.subtree_control").write_text(" ".join("+" + c for c in controllers))
    for leaf in LEAVES:
        (group / leaf).mkdir()
    for leaf, values in limits.items():
        where = group / leaf if leaf else group
        for controller, value in values.items():
            if kind == "v2" and controller in controllers:
                (where / f"{controller}.max").write_text(str(value))
            elif kind == controller == "pids":
                (where / "pids.max").write_text(str(value))
            elif kind == controller == "memory":
                (where / "memory.limit_in_bytes").write_text(str(value))


def sweep(parent: Path) -> None:
    """Remove the sandbox cgroups under `parent` whose owner is gone (its lock is free) and that
    hold no process. Call with `parent`'s lock held."""
    for group in parent.glob(PREFIX + "*"):
        try:
            fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner lives
            os.close(fd)
            continue
        try:
            if not populated(group):
                remove(group)
        finally:
            os.close(fd)


def populated(group: Path) -> bool:
    """Whether a process is in `group` or below it."""
    events = group / "cgroup.events"
    if events.exists():  # v2
        return "populated 1" in events.read_text()
    return any((g / "cgroup.procs").read_text().strip() for g in [group, *(p for p in group.rglob("*") if p.is_dir())])


def kill(group: Path) -> None:
    """Kill every process in `group` and below it (v2's cgroup.kill; on v1, each listed pid until none is left)."""
    if (group / "cgroup.kill").exists():
        try:
            (group / "cgroup.kill").write_text("1")
        except OSError:
            pass
        return
    for _ in range(100):  # v1 has no atomic kill: until nothing is left (forks race the kill)
        pids = []
        for g in [group, *(p for p in group.rglob("*") if p.is_dir())]:
            try:
                pids += (g / "cgroup.procs").read_text().split()
            except OSError:
                pass
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def remove(group: Path, wait_s: float = 0.0) -> bool:
    """rmdir `group` and the cgroups below it (bottom up), waiting up to `wait_s` for killed
    processes to leave them; False where one still holds a process."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            for child in sorted((c for c in group.rglob("*") if c.is_dir()), key=lambda c: -len(c.parts)):
                child.rmdir()
            group.rmdir()
            return True
        except FileNotFoundError:
            if not group.exists():
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
