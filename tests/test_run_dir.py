"""mmpt/run_dir.py: an output_dir every rank sees, held by one live run, and run_state.json."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmpt import run_dir
from mmpt.config import ConfigError

SHARED_WORKER = """
import sys, torch.distributed as dist
from mmpt import run_dir
from mmpt.config import ConfigError
rank, out, init = int(sys.argv[1]), sys.argv[2 + int(sys.argv[1])], sys.argv[4]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
try:
    run_dir.require_shared(out, timeout_s=1)
    print("shared")
except ConfigError as e:
    print(e)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("local", [False, True])
def test_an_output_dir_not_shared_by_every_rank_is_refused(tmp_path, local):
    # rank 1 sees another directory under the same name (a node-local disk), or the same one
    dirs = [tmp_path / "out", tmp_path / ("node1" if local else "") / "out"]
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", SHARED_WORKER, str(r), *map(str, dirs), init], stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    if local:
        assert all("'output_dir'" in o and "not shared by every rank (rank(s) [1]" in o for o in outs), outs
    else:
        assert outs == ["shared", "shared"]
    assert not list((tmp_path / "out").glob(".shared-probe-*"))  # the probe is removed


def test_run_state_names_how_the_run_ended(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run-state", "--data_dir", str(tmp_path / "data"), "--output_dir", str(out), "--per_device_batch_size", "2"]
    assert run_dir.main(argv) == 0 and capsys.readouterr().out.strip() == "none"
    out.mkdir()
    for state in ("running", "stopped", "finished"):
        run_dir.write_run_state(out, state, step=3)
        assert run_dir.main(argv) == 0 and capsys.readouterr().out.strip() == state
    assert run_dir.main(["run-state", "--nope", "1"]) == 2 and "unknown field 'nope'" in capsys.readouterr().err


def test_node_failure_requeues_are_counted_and_kept_across_the_runs_writes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["node-failure-requeue", "--data_dir", str(tmp_path / "data"), "--output_dir", str(out)]
    assert run_dir.main(argv) == 0 and capsys.readouterr().out.strip() == "1"
    run_dir.write_run_state(out, "running", step=0)  # the requeued run's own write keeps the count
    assert run_dir.read_run_state(out) == {"state": "running", "step": 0, run_dir.NODE_FAILURES: 1}
    assert run_dir.main(argv) == 0 and capsys.readouterr().out.strip() == "2"
    assert run_dir.read_run_state(out)["state"] == "running"


HOLDER = """
import sys, time
from mmpt import run_dir
run_dir.lock_output_dir(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_an_output_dir_held_by_a_live_run_is_refused_and_a_dead_ones_is_not(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"is in use by a live run .*\"pid\": {holder.pid}"):
            run_dir.lock_output_dir(out)
    finally:
        holder.kill()
        holder.wait()
    assert f'"pid": {holder.pid}' in (out / run_dir.LOCK).read_text()  # the stale file is still there...
    lock = run_dir.lock_output_dir(out)  # ...and blocks nothing: its process is gone
    lock.release()
    run_dir.lock_output_dir(out).release()  # released: taken again
