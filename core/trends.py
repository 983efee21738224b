"""Trends and windowed statistics over each customer's months or invoices, shared by the feature
build and the decision engine (which recomputes them for an earlier billing period): numpy over
many rows, and the same arithmetic for one row in plain Python (``row_*``), value for value."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class SlopeSums:
    """Running sums for a least-squares slope, one per snapshot."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.n, self.x, self.y, self.xx, self.xy = (np.zeros(shape) for _ in range(5))

    def add(self, where: tuple[slice, ...], x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> None:
        x, y = np.where(mask, x, 0.0), np.where(mask, y, 0.0)
        self.n[where] += mask
        self.x[where] += x
        self.y[where] += y
        self.xx[where] += x * x
        self.xy[where] += x * y

    def slope(self, at: tuple[np.ndarray, ...] | tuple[slice, ...] = (slice(None),)) -> np.ndarray:
        """The slope; NaN with fewer than two points or no spread in x."""
        n, sx, sy = self.n[at], self.x[at], self.y[at]
        denominator = n * self.xx[at] - sx * sx
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (n * self.xy[at] - sx * sy) / denominator
        return np.where((n >= 2) & (denominator > 1e-9), slope, np.nan)


def least_squares_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope per row over the points where both are known; NaN below two points.

    The sums are taken over each row at once (the engine calls this for a single invoice too,
    where numpy's cost per call, not per value, is what counts); :class:`SlopeSums` adds the same
    sums a column at a time, in the same order for rows of fewer than eight months (numpy adds
    longer rows pairwise, which may differ in the last bit).
    """
    sums = SlopeSums((x.shape[0],))
    known = ~(np.isnan(x) | np.isnan(y))
    x, y = np.where(known, x, 0.0), np.where(known, y, 0.0)
    sums.n[:] = known.sum(axis=1)
    sums.x[:] = x.sum(axis=1)
    sums.y[:] = y.sum(axis=1)
    sums.xx[:] = (x * x).sum(axis=1)
    sums.xy[:] = (x * y).sum(axis=1)
    return sums.slope()


def window_stats(history: np.ndarray, windows: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Mean and max over the first ``w`` columns (months) of each row, for each window ``w``.

    Only known values count; NaN when none in the window is known.
    """
    known = ~np.isnan(history)
    count = known.cumsum(axis=1)
    total = np.where(known, history, 0.0).cumsum(axis=1)
    largest = np.fmax.accumulate(history, axis=1)
    stats = {}
    for window in windows:
        n = count[:, window - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[f"avg_{window}m"] = np.where(n > 0, total[:, window - 1] / n, np.nan)
        stats[f"max_{window}m"] = largest[:, window - 1]
    return stats


# One row in plain Python: deciding one invoice, numpy's cost per call is the whole cost. Each gives
# its numpy function's value to the last bit: sums in numpy's order (it adds fewer than eight values
# one after another, from the first), of equal largest values (0.0, -0.0) the later, as np.fmax.


def row_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """:func:`least_squares_slope` of one row (fewer than eight points)."""
    count = sum_x = sum_y = sum_xx = sum_xy = 0.0
    for position, (x_value, y_value) in enumerate(zip(x, y, strict=True)):
        known = not (math.isnan(x_value) or math.isnan(y_value))
        x_value, y_value = (x_value, y_value) if known else (0.0, 0.0)
        if position == 0:  # numpy's sum starts from the first value, not from 0.0
            count, sum_x, sum_y = float(known), x_value, y_value
            sum_xx, sum_xy = x_value * x_value, x_value * y_value
            continue
        count += known
        sum_x += x_value
        sum_y += y_value
        sum_xx += x_value * x_value
        sum_xy += x_value * y_value
    denominator = count * sum_xx - sum_x * sum_x
    if count < 2 or not denominator > 1e-9:
        return math.nan
    return (count * sum_xy - sum_x * sum_y) / denominator


def row_window_stats(history: Sequence[float], windows: tuple[int, ...]) -> dict[str, float]:
    """:func:`window_stats` of one row (windows of fewer than eight months)."""
    stats: dict[str, float] = {}
    for window in windows:
        known = [value for value in history[:window] if not math.isnan(value)]
        total = 0.0 if math.isnan(history[0]) else history[0]
        for value in history[1:window]:  # an unknown month adds 0.0, as the masked cumsum does
            total += 0.0 if math.isnan(value) else value
        largest = math.nan
        for value in known:
            if math.isnan(largest) or value >= largest:
                largest = value
        stats[f"avg_{window}m"] = total / len(known) if known else math.nan
        stats[f"max_{window}m"] = largest
    return stats
