"""The one framing of every channel: whole frames, None at a clean end, FrameError for anything else."""

from __future__ import annotations

import os
import threading
import time

import pytest

from mmpt.eval.sandbox.inside.frames import FrameError, frame, read_frame, write_frames


def pipe_with(data: bytes, close: bool = True) -> int:
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    return r


def test_frames_round_trip_in_one_write_and_end_with_none():
    r, w = os.pipe()
    write_frames(w, [b"a", b"", b"xyz" * 1000])
    os.close(w)
    assert [read_frame(r, 1 << 20) for _ in range(4)] == [b"a", b"", b"xyz" * 1000, None]


@pytest.mark.parametrize(
    ("data", "error"),
    [(frame(b"abcd")[:6], "cut short"), (b"\x00\x00", "cut short"), (frame(b"x" * 100), "a frame of 100 bytes")],
)
def test_a_torn_or_oversized_frame_is_an_error_not_an_end(data, error):
    with pytest.raises(FrameError, match=error):
        read_frame(pipe_with(data), 64)


def test_a_frame_late_for_its_deadline_is_an_error():
    r, w = os.pipe()
    os.write(w, frame(b"abc")[:5])  # the writer stalls mid-frame
    start = time.monotonic()
    with pytest.raises(FrameError, match="in time"):
        read_frame(r, 64, deadline=time.monotonic() + 0.2)
    assert time.monotonic() - start < 2
    later = threading.Timer(0.1, lambda: os.write(w, b"c"))
    later.start()
    r2, w2 = os.pipe()
    threading.Timer(0.1, lambda: write_frames(w2, [b"late"])).start()
    assert read_frame(r2, 64, deadline=time.monotonic() + 5) == b"late"
