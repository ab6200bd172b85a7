"""Exact dynamic time warping in linear memory, a cost row at a time (numpy only).

:func:`dtw` aligns two sequences given a function that returns one row of their cost matrix
(:func:`posekit.motion.pose_distance_rows` for poses); :func:`band_columns` is its Sakoe-Chiba band.
"""
from __future__ import annotations

import math

import numpy as np

from posekit.errors import ArgumentError


def band_columns(rows: int, columns: int, band: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The Sakoe-Chiba band about the line from (0, 0) to (rows - 1, columns - 1): per row its first
    and last column, ``|j - i (columns - 1) / (rows - 1)| <= band``. Shape: -> (rows,), (rows,) int64.

    Raises:
        ArgumentError: the band is narrower than ``max(1, (slope + 1) / 2)`` columns, which is what
            keeps consecutive rows connected (a path always exists).
    """
    i = np.arange(rows)
    if band is None:
        return np.zeros(rows, np.int64), np.full(rows, columns - 1, np.int64)
    slope = (columns - 1) / max(rows - 1, 1)
    minimum = max(1.0, (slope + 1) / 2)
    if band < minimum:
        raise ArgumentError(f"band={band}: too narrow for {rows} against {columns} frames; expected at least "
                            f"{math.ceil(minimum)} frames")
    centre = i * slope
    return (np.clip(np.ceil(centre - band), 0, columns - 1).astype(np.int64),
            np.clip(np.floor(centre + band), 0, columns - 1).astype(np.int64))


def dtw(cost_row, rows: int, columns: int, band: int | None = None) -> tuple[float, np.ndarray]:
    """Exact dynamic time warping: the monotone path from (0, 0) to (rows - 1, columns - 1) with
    steps (1, 1), (1, 0), (0, 1) that minimises the sum of the cost of its cells.

    ``D[i, j] = c[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])``, computed row by row: with
    ``a[j] = c[i, j] + min(D[i-1, j-1], D[i-1, j])`` and ``C`` the cumulative sum of the row's
    costs, ``D[i, j] = C[j] + min over l <= j of (a[l] - C[l])``, one ``np.minimum.accumulate``.
    Ties go to the diagonal, then up (previous row), then left, in the forward pass and so in
    the path (the path is the one read back from the end along these choices).

    Linear memory (divide and conquer, after Hirschberg): a forward pass over a block of rows
    carries, for every cell, the column where the path read back from that cell first enters the
    block's middle row; at the block's last cell that is a cell of the path. The block is split
    there and each half solved alone, starting at its first path cell: between two cells of the
    path, costs counted from the first give the same choices as costs counted from (0, 0).
    Blocks of at most ``rows + columns`` cells store two direction bits per cell instead.

    Time O(rows x band width) (O(rows x columns) without a band), about twice one pass's cost
    evaluations. Memory: O(columns) floats per pass and O(rows + columns) for the path.

    Args:
        cost_row: ``(i, first, last) -> costs (last - first + 1,)`` of row ``i``, columns
            ``first..last``; finite.
        band: Sakoe-Chiba radius in columns about the diagonal (see :func:`band_columns`), or None.

    Returns:
        The total cost of the path and the path, (P, 2) int64 (row, column) pairs from (0, 0).
    """
    if rows < 1 or columns < 1:
        raise ArgumentError(f"cannot align {rows} frames with {columns}; expected at least one frame in each")
    first, last = band_columns(rows, columns, band)
    small = rows + columns  # cells of a block solved with stored direction bits
    path: list[tuple[int, int]] = []
    totals = []  # of each block's pass; the first is the whole grid's
    blocks = [(0, rows - 1, 0, columns - 1)]  # (first row, last row, start column, end column), last first
    while blocks:
        top, bottom, start, end = blocks.pop()
        lo, hi = np.maximum(first[top : bottom + 1], start), np.minimum(last[top : bottom + 1], end)
        if bottom - top < 2 or int((hi - lo + 1).sum()) <= small:
            total, steps = _sweep(cost_row, first, last, top, bottom, start, end, None)
            path.extend(steps[1:] if path else steps)  # a block's first cell ends the previous block
        else:
            middle = (top + bottom) // 2
            total, column = _sweep(cost_row, first, last, top, bottom, start, end, middle)
            blocks += [(middle, bottom, column, end), (top, middle, start, column)]
        totals.append(total)
    return totals[0], np.asarray(path, np.int64)


def _sweep(cost_row, first: np.ndarray, last: np.ndarray, top: int, bottom: int, start: int, end: int,
           middle: int | None) -> tuple[float, list[tuple[int, int]] | int]:
    """One forward pass of :func:`dtw` over rows ``top..bottom``, columns clipped to ``start..end``,
    from cell (top, start) to (bottom, end). Returns the cost of that cell and, with ``middle``,
    the column where its path first enters row ``middle``; without, its path as (row, column) pairs
    (from two direction bits per cell)."""
    up_bits, left_bits, lows = [], [], []
    width = end + 2
    previous = np.full(width, np.inf)  # D of the previous row at column j + 1; index 0 is column -1
    labels = np.zeros(width, np.int64)  # per column of the previous row: where its path enters row middle
    for i in range(top, bottom + 1):
        lo, hi = max(int(first[i]), start), min(int(last[i]), end)
        costs = np.asarray(cost_row(i, lo, hi), np.float64)
        if i == top:  # the path starts at (top, start): only its first cell has a predecessor, of cost 0
            diagonal, up = np.full(hi - lo + 1, np.inf), np.full(hi - lo + 1, np.inf)
            diagonal[0] = 0.0
        else:
            diagonal, up = previous[lo : hi + 1], previous[lo + 1 : hi + 2]
        from_up = up < diagonal
        entry = costs + np.where(from_up, up, diagonal)  # a[j]
        cumulative = np.cumsum(costs)
        running = np.minimum.accumulate(entry - cumulative)
        from_left = np.zeros(len(costs), bool)
        from_left[1:] = running[:-1] < entry[1:] - cumulative[1:]
        row = np.where(from_left, np.concatenate([[0.0], cumulative[1:] + running[:-1]]), entry)
        if middle is not None and i >= middle:
            if i == middle:
                entered = np.arange(lo, hi + 1)
            else:
                entered = np.where(from_up, labels[lo + 1 : hi + 2], labels[lo : hi + 1])
            # A step left takes the label of the nearest cell to its left that was entered from above.
            entered = entered[np.maximum.accumulate(np.where(from_left, 0, np.arange(len(costs))))]
            labels = np.zeros(width, np.int64)
            labels[lo + 1 : hi + 2] = entered
        elif middle is None:
            up_bits.append(np.packbits(from_up & ~from_left))
            left_bits.append(np.packbits(from_left))
            lows.append(lo)
        previous = np.full(width, np.inf)
        previous[lo + 1 : hi + 2] = row
    total = float(previous[end + 1])
    if middle is not None:
        return total, int(labels[end + 1])
    path = [(bottom, end)]
    i, j = bottom, end
    while (i, j) != (top, start):  # back along the stored choices
        offset = j - lows[i - top]
        bit = 7 - offset % 8
        if left_bits[i - top][offset // 8] >> bit & 1:
            j -= 1
        elif up_bits[i - top][offset // 8] >> bit & 1:
            i -= 1
        else:
            i, j = i - 1, j - 1
        path.append((i, j))
    return total, path[::-1]
