"""mmpt/console.py: a rank whose stdout reader went away (a dead pdsh runner) keeps working and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# prints a log line after the reader is gone, then does the work that matters (a "save"), then
# ends like the trainer: status 0 unless something failed
RANK = """
import sys, time
if sys.argv[2] == "guarded":
    from mmpt.console import tolerate_broken_pipes
    tolerate_broken_pipes()
time.sleep(0.5)  # the reader closes its end meanwhile
for _ in range(3):
    print("step 10/100 loss 1.2345 " + "x" * 70000, flush=True)  # more than a pipe's buffer
print("a line still buffered at exit")
print("on stderr too", file=sys.stderr, flush=True)
open(sys.argv[1], "w").write("saved")
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_a_broken_pipe_never_stops_the_save(tmp_path, guarded):
    saved = tmp_path / "saved"
    proc = subprocess.Popen(
        [sys.executable, "-c", RANK, str(saved), "guarded" if guarded else "plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    proc.stdout.close()  # the runner died: nobody reads the rank's stdout any more
    proc.stderr.close()
    status = proc.wait(timeout=60)
    if guarded:
        assert status == 0 and saved.read_text() == "saved"
    else:  # what the guard is for: without it the first print after the reader left kills the rank
        assert status != 0 and not saved.exists()
