"""Packing instances into rows of at most `max_len` tokens without splitting any, and the row layout.

Strategy: best-fit decreasing. Instances are taken longest first (ties by corpus order); each goes
into the open row whose free space is the smallest that still fits it, else into a new row. On
stdlib pairs at 2048 tokens this fills ≥ 99% of the rows' capacity, where next-fit in corpus order
fills far less (see bench/packing.py). The corpus order is then restored as far as rows allow:
instances inside a row are in corpus order, and rows are ordered by their first instance.

Nothing here is quadratic in the row length: a row is described by its instances' token ids,
per-token position ids (restarting at 0 per instance) and modality; attention masks are built from
those on the fly by the objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class _FreeSpace:
    """Open rows bucketed by free space, with `fit(n)` = a row whose free space is the least ≥ n.

    A segment tree over free-space values 0..max_len marks the non-empty buckets, so a query or an
    update costs O(log max_len) whatever the number of rows.
    """

    def __init__(self, max_len: int):
        self.size = 1 << max_len.bit_length()  # leaves >= max_len + 1
        self.tree = [False] * (2 * self.size)
        self.buckets: list[list[int]] = [[] for _ in range(max_len + 1)]

    def _mark(self, space: int, nonempty: bool) -> None:
        i = space + self.size
        self.tree[i] = nonempty
        i //= 2
        while i and self.tree[i] != (self.tree[2 * i] or self.tree[2 * i + 1]):
            self.tree[i] = self.tree[2 * i] or self.tree[2 * i + 1]
            i //= 2

    def push(self, space: int, row: int) -> None:
        self.buckets[space].append(row)
        if len(self.buckets[space]) == 1:
            self._mark(space, True)

    def fit(self, need: int) -> tuple[int, int] | None:
        """(free space, row) of the tightest open row with free space ≥ need, removed; None if none."""
        space = self._first_at_least(need)
        if space is None:
            return None
        row = self.buckets[space].pop()
        if not self.buckets[space]:
            self._mark(space, False)
        return space, row

    def _first_at_least(self, need: int) -> int | None:
        # walk up from leaf `need` to find the leftmost marked subtree to its right, then down it
        i = need + self.size
        if self.tree[i]:
            return need
        while i > 1:
            if i % 2 == 0 and self.tree[i + 1]:
                i += 1
                while i < self.size:
                    i = 2 * i if self.tree[2 * i] else 2 * i + 1
                return i - self.size
            i //= 2
        return None


def pack(lengths: Sequence[int] | np.ndarray, max_len: int) -> list[np.ndarray]:
    """Rows of instance indices (best-fit decreasing); every index appears in exactly one row.

    Each row's lengths sum to ≤ max_len; indices inside a row ascend; rows are sorted by their first
    index. Lengths must lie in 1..max_len (drop longer instances before packing).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > max_len):
        bad = int(np.flatnonzero((lengths < 1) | (lengths > max_len))[0])
        raise ValueError(f"instance {bad} has length {int(lengths[bad])}, outside 1..{max_len}")
    free = _FreeSpace(max_len)
    members: list[list[int]] = []
    # longest first; a stable sort keeps corpus order among equal lengths
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        found = free.fit(n)
        if found is None:
            space, row = max_len, len(members)
            members.append([])
        else:
            space, row = found
        members[row].append(i)
        if space - n > 0:
            free.push(space - n, row)
    rows = [np.sort(np.asarray(m, dtype=np.int64)) for m in members]
    rows.sort(key=lambda r: int(r[0]))
    return rows


def fill_ratio(lengths: Sequence[int] | np.ndarray, rows: list[np.ndarray], max_len: int) -> float:
    """Tokens in rows / capacity of the rows (rows × max_len)."""
    if not rows:
        return 0.0
    lengths = np.asarray(lengths, dtype=np.int64)
    return float(sum(int(lengths[r].sum()) for r in rows)) / (len(rows) * max_len)


def row_layout(offsets: np.ndarray, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How to lay instances out as rows, from their token `offsets` in a flat corpus.

    offsets: (instances + 1,) start of each instance in the flat token arrays, then the total.
    Returns (gather, position_ids, row_offsets): flat token array indexed by `gather` (tokens,) is
    the rows' tokens back to back; `position_ids` (tokens,) restart at 0 per instance;
    `row_offsets` (rows + 1,) delimit the rows in both.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    order = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    starts = offsets[order]
    lens = offsets[order + 1] - starts  # (instances,)
    out_starts = np.cumsum(lens) - lens  # where each instance begins in the output
    total = int(lens.sum())
    # token j of the output belongs to instance k with out_starts[k] <= j: its offset inside it is
    # j - out_starts[k], so it comes from starts[k] + that offset
    position_ids = np.arange(total, dtype=np.int64) - np.repeat(out_starts, lens)
    gather = np.repeat(starts, lens) + position_ids
    # rows are never empty, so reduceat sums each row's instances
    row_tokens = np.add.reduceat(lens, _row_starts(rows)) if rows else np.zeros(0, dtype=np.int64)
    row_offsets = np.concatenate([[0], np.cumsum(row_tokens)]).astype(np.int64)
    return gather, position_ids, row_offsets


def _row_starts(rows: list[np.ndarray]) -> np.ndarray:
    """Index in the concatenated `order` where each row begins."""
    sizes = np.asarray([len(r) for r in rows], dtype=np.int64)
    return np.cumsum(sizes) - sizes
