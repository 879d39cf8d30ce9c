"""A sandbox's cgroups: under the caller's own, owned by a lock, removed by others only when provably unused."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmpt.eval.sandbox import cgroups

LIMITS = {"": {"pids": 64, "memory": 1 << 30}, "candidates": {"pids": 24, "memory": 512 << 20}}


def test_own_cgroups_are_where_proc_self_cgroup_says():
    own = cgroups.own_cgroups()
    listed = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        listed["v2" if controllers == "" else controllers] = path
    for kind, where in own.items():
        assert where.is_dir() and str(where).endswith(listed[kind].rstrip("/")), (kind, where)
        assert (where / "cgroup.procs").exists() and str(os.getpid()) in (where / "cgroup.procs").read_text().split()


@pytest.fixture
def made():
    made = cgroups.make(LIMITS)
    if not made.groups:
        pytest.fail("no cgroup could be made here: the sandbox's limits and kill are missing")
    yield made
    made.close()


@pytest.mark.heavy
def test_a_sandboxs_cgroups_sit_under_the_callers_own_with_their_leaves_and_limits(made):
    own = cgroups.own_cgroups()
    for kind, group in made.groups.items():
        assert group.parent == own[kind] and group.name.startswith(cgroups.PREFIX)
        assert all((group / leaf).is_dir() for leaf in cgroups.LEAVES)
        if kind == "pids":
            assert (group / "pids.max").read_text().strip() == "64"
            assert (group / "candidates" / "pids.max").read_text().strip() == "24"
        if kind == "memory":
            assert int((group / "candidates" / "memory.limit_in_bytes").read_text()) == 512 << 20
        # its owner holds it: nobody else can take the lock
        fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


@pytest.mark.heavy
def test_close_kills_what_is_left_and_removes_them(made):
    groups = dict(made.groups)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    for fd in made.procs("candidates"):
        os.write(fd, str(child.pid).encode())
        os.close(fd)
    made.close()
    assert child.wait(timeout=10) == -9
    assert not any(group.exists() for group in groups.values())


MAKER = """\
import sys, time
from mmpt.eval.sandbox import cgroups
made = cgroups.make({})
print(" ".join(str(g) for g in made.groups.values()), flush=True)
time.sleep(float(sys.argv[1]))
"""


@pytest.mark.heavy
def test_a_sweep_removes_only_cgroups_whose_owner_is_gone_and_that_hold_no_process(tmp_path):
    # an owner that dies without closing: its lock goes with it, its (empty) cgroups are swept
    dead = subprocess.run([sys.executable, "-c", MAKER, "0"], capture_output=True, text=True, check=True)
    gone = [Path(p) for p in dead.stdout.split()]
    assert gone and all(g.exists() for g in gone)
    # a live owner, whose cgroups are empty for now (a sandbox between its mkdir and its first process)
    live = subprocess.Popen([sys.executable, "-c", MAKER, "30"], stdout=subprocess.PIPE, text=True)
    kept = [Path(p) for p in live.stdout.readline().split()]
    # an owner gone, but a process still in its cgroup: not provably unused
    busy = subprocess.run([sys.executable, "-c", MAKER, "0"], capture_output=True, text=True, check=True)
    held = [Path(p) for p in busy.stdout.split()]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for group in held:
            (group / "zygote" / "cgroup.procs").write_text(str(sleeper.pid))
        for parent in {g.parent for g in gone + kept + held}:
            cgroups.sweep(parent)
        assert not any(g.exists() for g in gone)
        assert all(g.exists() for g in kept + held)
    finally:
        live.kill()
        live.wait()
        sleeper.kill()
        sleeper.wait()
        time.sleep(0.1)
        for group in kept + held:
            cgroups.remove(group, wait_s=5.0)
