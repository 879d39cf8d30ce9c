"""mmpt/stopping.py: save requests from signals (from the first line on) and from a launcher that is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmpt import stopping

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def saved_handlers():
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    before = {s: signal.getsignal(s) for s in sigs}
    yield
    for s, h in before.items():
        signal.signal(s, h)


def test_a_signal_caught_early_becomes_the_runs_request(saved_handlers):
    stopping.catch_early(["--data_dir", "d", "--save_signal", "SIGUSR2"])
    os.kill(os.getpid(), signal.SIGUSR2)  # in the import window: flagged, not the default action (death)
    stop = stopping.StopFlag("SIGUSR2")
    try:
        assert stop.raised and stop.name == "SIGUSR2"
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # given back to what was there before mmpt


def test_interruptible_raises_on_a_request_and_on_one_before_it(saved_handlers):
    stop = stopping.StopFlag("SIGUSR1")
    try:
        with pytest.raises(stopping.StopRequested):
            with stop.interruptible():
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(5)  # interrupted at once
        assert stop.raised
        with pytest.raises(stopping.StopRequested):
            with stop.interruptible():
                pass  # a request that came before the block
    finally:
        stop.close()


# Started by a parent whose command line looks like torchrun's; prints its watch, then waits for the request.
CHILD = textwrap.dedent(
    """
    import sys, time
    from mmpt import stopping
    stop = stopping.StopFlag("SIGTERM")
    watched = stopping.watch_launcher(stop, "torchrun")
    print("watching", [pid for pid, _ in watched], flush=True)
    deadline = time.time() + 60
    while not stop.raised and time.time() < deadline:
        time.sleep(0.05)
    print("request:", stop.name, flush=True)
    """
)


def test_a_rank_asks_for_a_save_when_its_launcher_is_killed(tmp_path):
    """SIGKILL to a torchrun agent leaves its workers running in their own sessions: each worker
    sees the agent gone and asks for a save."""
    (tmp_path / "child.py").write_text(CHILD)
    agent = tmp_path / "torch.distributed.run.py"  # the agent's command line names torchrun's module
    agent.write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'child.py')!r}], start_new_session=True, stdout=open({str(tmp_path / 'out')!r}, 'w'))\n"
        "time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, str(agent)], env=env)
    out, deadline = tmp_path / "out", time.time() + 60
    while "watching" not in (out.read_text() if out.exists() else ""):
        assert time.time() < deadline, "the child never started its watch"
        time.sleep(0.1)
    assert f"watching [{parent.pid}]" in out.read_text()
    parent.kill()
    parent.wait()
    while "request:" not in out.read_text():
        assert time.time() < deadline, out.read_text()
        time.sleep(0.1)
    assert f"request: launcher process {parent.pid} gone" in out.read_text()


def test_no_launcher_to_watch_for_a_plain_process():
    assert stopping.launcher_processes("single") == [] and stopping.launcher_processes("torchrun") == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_sigterm_sigint_and_the_save_signal_each_request_a_save(sig):
    stop = stopping.StopFlag("SIGUSR1")
    try:
        assert not stop.raised
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), signal.SIGTERM)  # a second request (the launcher's own) changes nothing
        assert stop.raised and stop.name == signal.Signals(sig).name
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
