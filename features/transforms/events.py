"""Per-customer events and monthly snapshot instants, for many customers and instants at once."""

from __future__ import annotations

import numpy as np

from core.calendar import month_index, month_start


class EventIndex:
    """Events of many customers, sorted by (customer, time), queried for many instants at once."""

    def __init__(self, codes: np.ndarray, times: np.ndarray) -> None:
        stamps = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
        self._times = np.unique(stamps)
        self._span = len(self._times) + 1
        keys = codes.astype(np.int64) * self._span + np.searchsorted(self._times, stamps)
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    def _bounds(
        self, codes: np.ndarray, times: np.ndarray, inclusive: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        stamps = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
        rank = np.searchsorted(self._times, stamps, side="right" if inclusive else "left")
        base = codes.astype(np.int64) * self._span
        start = np.searchsorted(self._keys, base, side="left")
        end = np.searchsorted(self._keys, base + rank, side="left")
        return start, end

    def count(self, codes: np.ndarray, times: np.ndarray, inclusive: bool = False) -> np.ndarray:
        """Events of each customer before each time (or at it, when ``inclusive``)."""
        start, end = self._bounds(codes, times, inclusive)
        return end - start

    def latest(self, codes: np.ndarray, times: np.ndarray, inclusive: bool = True) -> np.ndarray:
        """Row of each customer's latest event at (or before) each time; -1 when there is none."""
        start, end = self._bounds(codes, times, inclusive)
        found = end > start
        rows = np.full(len(start), -1, dtype=np.int64)
        rows[found] = self._order[end[found] - 1]
        return rows


def take_rows(values: np.ndarray, rows: np.ndarray, missing: float = np.nan) -> np.ndarray:
    """``values[rows]`` as floats, with ``missing`` where ``rows`` is -1."""
    if len(values) == 0:
        return np.full(len(rows), missing)
    return np.where(rows >= 0, values[np.maximum(rows, 0)].astype(float), missing)


def monthly_grid(
    codes: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer at ``first`` and at the first day of every later month up to ``last``."""
    first_month = month_index(first) + 1
    count = np.maximum(month_index(last) - first_month + 1, 0)
    count = np.where(np.isnat(first) | np.isnat(last), 0, count)
    repeated = np.repeat(np.arange(len(codes)), count)
    offsets = np.arange(len(repeated)) - np.repeat(np.cumsum(count) - count, count)
    starts = month_start(first_month[repeated] + offsets)
    keep = ~np.isnat(first)
    grid_codes = np.concatenate([codes[keep], codes[repeated]])
    grid_days = np.concatenate([first[keep], starts])
    return grid_codes, grid_days
