"""Property tests of mmpt/data/packing.py against naive references."""

from __future__ import annotations

import numpy as np
import pytest

from mmpt.data.packing import fill_ratio, pack, row_layout


def _naive_best_fit_decreasing(lengths: list[int], max_len: int) -> list[int]:
    """Sorted row totals of an O(n * rows) best-fit decreasing (the reference)."""
    totals: list[int] = []
    for n in sorted(lengths, reverse=True):
        fits = [r for r, t in enumerate(totals) if t + n <= max_len]
        if fits:
            best = min(fits, key=lambda r: max_len - totals[r])
            totals[best] += n
        else:
            totals.append(n)
    return sorted(totals)


def _next_fit(lengths: list[int], max_len: int) -> int:
    rows, used = 0, max_len
    for n in lengths:
        if used + n > max_len:
            rows, used = rows + 1, 0
        used += n
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_pack_properties(seed: int):
    rng = np.random.default_rng(seed)
    max_len = int(rng.choice([8, 64, 100, 2048]))
    n = int(rng.integers(0, 300))
    lengths = rng.integers(1, max_len + 1, size=n) // rng.integers(1, 6, size=n) + 1
    lengths = np.minimum(lengths, max_len)
    rows = pack(lengths, max_len)
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(n))  # every instance exactly once
    assert all(int(lengths[r].sum()) <= max_len for r in rows)
    assert all(np.all(np.diff(r) > 0) for r in rows)  # corpus order inside a row
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)  # rows by first instance
    assert sorted(int(lengths[r].sum()) for r in rows) == _naive_best_fit_decreasing(lengths.tolist(), max_len)
    assert len(rows) <= max(_next_fit(lengths.tolist(), max_len), 0)
    assert len(rows) >= -(-int(lengths.sum()) // max_len)
    if rows:
        assert fill_ratio(lengths, rows, max_len) == pytest.approx(lengths.sum() / (len(rows) * max_len))


@pytest.mark.parametrize("seed", range(10))
def test_row_layout_concatenates_whole_instances(seed: int):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 50, size=int(rng.integers(1, 80)))
    instances = [rng.integers(0, 1000, size=n).tolist() for n in lengths]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate([np.asarray(i) for i in instances])
    rows = pack(lengths, 64)
    gather, positions, row_offsets = row_layout(offsets, rows)
    assert len(row_offsets) == len(rows) + 1
    for r, members in enumerate(rows):
        lo, hi = row_offsets[r], row_offsets[r + 1]
        # reference: the row is its instances back to back, positions restarting at each
        assert flat[gather[lo:hi]].tolist() == [t for i in members for t in instances[i]]
        assert positions[lo:hi].tolist() == [p for i in members for p in range(lengths[i])]


def test_pack_rejects_lengths_outside_the_row():
    with pytest.raises(ValueError, match="instance 2 has length 9, outside 1..8"):
        pack([3, 4, 9], 8)
    with pytest.raises(ValueError, match="instance 0 has length 0"):
        pack([0], 8)
    assert pack([], 8) == []
