"""Colluding samples: a scout that would learn a test's expected value and a forger that would read it back.

Each attack runs through `mmpt execute` as a model's samples would. The scout returns an object
whose `==` records its other side: a harness that runs it again in one process, with the tests,
hands it the expected value. It publishes the value through a channel between programs; the
forger, a later or concurrent sample of the same task, reads it and returns it. Neither the
expected value nor the channel may exist: the forger must fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXPECTED = 4242  # what only the tests know
TASK = {
    "task_id": "Collude/0",
    "prompt": 'def secret(x):\n    """A number nobody may learn from the tests."""\n',
    "canonical_solution": f"    return {EXPECTED}\n",
    "test": f"def check(candidate):\n    assert candidate(7) == {EXPECTED}\n",
    "entry_point": "secret",
}
BITS = 16

# publish(value) and read() -> value or None, per channel; each works between programs run by the
# harness of round two (the same sandbox or the same host), and none may work now
CHANNELS = {
    # names in the abstract socket namespace, bound to socketpair ends that live on in their own
    # queues after the process dies; the forger probes them with connect()
    "abstract_socket": f"""
import socket
def _bind(name):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(name)
    socket.send_fds(b, [b"k"], [a.fileno(), b.fileno()])  # a holds itself: it outlives this process
def publish(value):
    for bit in range({BITS}):
        if value >> bit & 1:
            _bind(b"\\0mmpt-oracle-%d" % bit)
    _bind(b"\\0mmpt-oracle-on")
def read():
    probe, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    def bound(name):  # EPERM: bound, but to a socket connected to its own pair
        try:
            probe.connect(name)
            return True
        except PermissionError:
            return True
        except OSError:
            return False
    if not bound(b"\\0mmpt-oracle-on"):
        return None
    return sum(1 << bit for bit in range({BITS}) if bound(b"\\0mmpt-oracle-%d" % bit))
""",
    # open-file-description record locks on a read-only file every sandbox binds, held while the
    # forger (on another worker) looks
    "ofd_lock": f"""
import fcntl, os, struct, time
PATH = "/mmpt/wire.py"
def _lock(start, kind):
    return struct.pack("hhqqi4x", kind, 0, start, 1, 0)
def publish(value):
    fd = os.open(PATH, os.O_RDONLY)
    for bit in range({BITS} + 1):
        if bit == {BITS} or value >> bit & 1:
            fcntl.fcntl(fd, 37, _lock(bit, fcntl.F_RDLCK))  # F_OFD_SETLK
    time.sleep(2.0)
def read():
    fd = os.open(PATH, os.O_RDONLY)
    def held(bit):
        return struct.unpack("hhqqi4x", fcntl.fcntl(fd, 36, _lock(bit, fcntl.F_WRLCK)))[0] != fcntl.F_UNLCK  # F_OFD_GETLK
    deadline = time.time() + 2.0
    while time.time() < deadline:
        if held({BITS}):
            return sum(1 << bit for bit in range({BITS}) if held(bit))
        time.sleep(0.01)
    return None
""",
    # page-cache residency of a file every sandbox can read: evict a region, read the pages of the
    # set bits, and let the forger see which are resident with mincore()
    "mincore": f"""
import ctypes, mmap, os, sys
PATH = os.path.join(sys.prefix, "lib", "python%d.%d" % sys.version_info[:2], "pydoc_data", "topics.py")
PAGES = 2 * {BITS} + 2
def publish(value):
    fd = os.open(PATH, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: only the pages read get cached
    os.posix_fadvise(fd, 0, PAGES * mmap.PAGESIZE, os.POSIX_FADV_DONTNEED)
    for bit in range({BITS} + 1):
        if bit == {BITS} or value >> bit & 1:
            os.pread(fd, 1, (2 * bit + 1) * mmap.PAGESIZE)
def read():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    fd = os.open(PATH, os.O_RDONLY)
    addr = libc.mmap(None, PAGES * mmap.PAGESIZE, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    vec = (ctypes.c_ubyte * PAGES)()
    if libc.mincore(ctypes.c_void_p(addr), PAGES * mmap.PAGESIZE, vec) != 0:
        return None
    resident = [vec[2 * bit + 1] & 1 for bit in range({BITS} + 1)]
    if not resident[{BITS}]:
        return None
    return sum(1 << bit for bit in range({BITS}) if resident[bit])
""",
}

RECORDER = """
class Recorder:
    def __eq__(self, other):
        publish(other)
        return True
    __hash__ = object.__hash__
"""


def scout(channel: str) -> str:
    return "    return Recorder()\n\n" + CHANNELS[channel] + RECORDER


def forger(channel: str) -> str:
    return "    value = read()\n    return value if value is not None else -1\n\n" + CHANNELS[channel]


def execute(tmp: Path, samples: list[str], workers: int) -> list[dict]:
    data, out = tmp / "task.jsonl", tmp / "results.jsonl"
    data.write_text(json.dumps(TASK) + "\n")
    (tmp / "samples.jsonl").write_text("".join(json.dumps({"task_id": TASK["task_id"], "completion": c}) + "\n" for c in samples))
    command = [sys.executable, "-m", "mmpt", "execute", "--benchmark", "humaneval", "--data-file", str(data),
               "--samples", str(tmp / "samples.jsonl"), "--out", str(out), "--workers", str(workers)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["completion_id"])


def test_the_channels_are_programs_and_the_forger_passes_with_the_value(tmp_path):
    """The attack is real: with the value in hand, the forger's code answers correctly (no sandbox needed)."""
    for channel in CHANNELS:
        scope: dict = {}
        exec(textwrap.dedent("def read():\n    return 4242\n") + "def secret(x):\n" + forger(channel).split("\n\n")[0], scope)  # noqa: S102
        assert scope["secret"](7) == EXPECTED, channel


@pytest.mark.heavy
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_a_scout_cannot_hand_a_forger_the_expected_value(tmp_path, channel, workers):
    results = execute(tmp_path, [scout(channel), forger(channel)], workers)
    assert [r["passed"] for r in results] == [False, False], results
    assert results[1]["status"] == "failed" and results[1]["mode"] == "split", results[1]
    # the scout failed split (not plain data) and was never run with the tests in one process
    assert "returned an object of type Recorder" in results[0]["detail"] and results[0]["mode"] == "split", results[0]


@pytest.mark.heavy
def test_on_an_evalplus_task_a_scout_learns_no_expected_output_a_forger_could_return(tmp_path):
    # HumanEval+'s HumanEval/13 (the EvalPlus fixture): the checker holds the reference's outputs of
    # every input; the scouts' objects never travel, so nothing compares them to an expected output
    assets = Path(__file__).resolve().parents[2] / "assets" / "evalplus"
    completions = [c for channel in sorted(CHANNELS) for c in (scout(channel), forger(channel))]
    write = "".join(json.dumps({"task_id": "HumanEval/13", "completion": c}) + "\n" for c in completions)
    (tmp_path / "samples.jsonl").write_text(write)
    command = [sys.executable, "-m", "mmpt", "execute", "--benchmark", "humaneval+", "--data-file",
               str(assets / "HumanEvalPlus-mini.jsonl"), "--samples", str(tmp_path / "samples.jsonl"),
               "--out", str(tmp_path / "results.jsonl"), "--workers", "1"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = sorted(
        (json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()), key=lambda r: r["completion_id"]
    )
    assert [(r["passed"], r["mode"], r["plus"]["status"]) for r in results] == [(False, "split", "skipped")] * len(completions)
    for scouted, forged in zip(results[::2], results[1::2]):
        assert scouted["base"] == {"status": "failed", "first_failure": 0,
                                   "detail": "Violation: greatest_common_divisor returned an object of type Recorder"}  # fmt: skip
        # it reads nothing (its channel is refused, or empty) and cannot answer the first input
        assert (forged["base"]["status"], forged["base"]["first_failure"]) == ("failed", 0), forged
