"""Frames on a pipe, the one framing of every channel of execution: a 4-byte big-endian length, then the payload.

Host ↔ zygote (JSON) and checker ↔ candidate (`wire` data) speak it; one reader, one contract: a
frame is read whole, `None` means the writer closed the pipe before a frame began, and anything
else that stops a frame (cut short, longer than the reader accepts, past its deadline) is a
`FrameError`. Standard library only: it runs inside the sandbox too.
"""

from __future__ import annotations

import os
import select
import struct
import time

LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """A frame that cannot be read whole: cut short, too long for its reader, or late."""


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def write_frames(fd: int, payloads: list[bytes]) -> None:
    """Write `payloads` as frames, all in one write where the pipe takes it (the reader then wakes once)."""
    data = memoryview(b"".join(frame(p) for p in payloads))
    while data:
        data = data[os.write(fd, data) :]


def read_frame(fd: int, limit: int, deadline: float | None = None) -> bytes | None:
    """The next frame's payload from `fd`; None where the writer closed the pipe before a frame
    began. FrameError for a frame cut short, one longer than `limit` bytes, or (with `deadline`, a
    `time.monotonic()` instant) one not complete by then."""
    head = _read_exact(fd, LENGTH.size, deadline)
    if head is None:
        return None
    (n,) = LENGTH.unpack(head)
    if n > limit:
        raise FrameError(f"a frame of {n} bytes (at most {limit} accepted)")
    body = _read_exact(fd, n, deadline)
    if body is None:
        raise FrameError(f"a frame cut short (the writer closed the pipe within its {n} bytes)")
    return body


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """`n` bytes, or None at end of file before the first of them; FrameError at end of file
    after some of them, or at the deadline."""
    parts, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FrameError("no complete frame in time")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise FrameError(f"a frame cut short (the writer closed the pipe after {got} of {n} bytes)")
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
