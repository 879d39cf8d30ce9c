"""A rank's stdout/stderr: a reader that went away (a broken pipe) silences them instead of failing the run.

Under a multi-node `deepspeed` launch the ranks print into pdsh's pipes; when the runner dies
(Ctrl-C, a scheduler's kill) every later `print` raises BrokenPipeError, and Python's final
flush turns the exit status into 120. A save in progress, or the `shutdown()` barrier after it,
must not depend on anyone reading the log: after the first EPIPE the stream's descriptor points
at /dev/null and printing carries on, unread.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


class TolerantStream:
    """`stream`, except that a broken pipe silences it (its descriptor becomes /dev/null) instead of raising."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())  # also for faulthandler and C code writing to the descriptor
        finally:
            os.close(devnull)
        try:
            self._stream.flush()  # what the failed write left in the buffer goes to /dev/null
        except OSError:
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)  # fileno, isatty, encoding, ...


def tolerate_broken_pipes() -> None:
    """Make sys.stdout and sys.stderr survive a reader that went away (idempotent)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, TolerantStream):
            setattr(sys, name, TolerantStream(stream))
