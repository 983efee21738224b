"""The simulated months; calendar arithmetic itself is in ``core.calendar``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from core.calendar import last_of_month

# A far date standing for "no end"; it fits datetime64[ns] so pandas can hold it too.
OPEN_END = np.datetime64("2200-01-01", "D")


@dataclass(frozen=True)
class Timeline:
    """The simulated months: ``starts[t]`` is the first day of usage month ``t``."""

    starts: np.ndarray

    @classmethod
    def ending(cls, end_month: dt.date, months: int) -> Timeline:
        last = np.datetime64(end_month.replace(day=1), "M")
        return cls((last - np.arange(months - 1, -1, -1)).astype("datetime64[D]"))

    @property
    def months(self) -> int:
        return len(self.starts)

    @property
    def first_day(self) -> np.datetime64:
        return self.starts[0]

    @property
    def last_day(self) -> np.datetime64:
        """The world's last day: nothing dated later is known."""
        return last_of_month(self.starts[-1:])[0]

    def end_of(self, t: int) -> np.datetime64:
        return last_of_month(self.starts[t : t + 1])[0]

    def days_in(self, t: int) -> int:
        return int((self.end_of(t) - self.starts[t]).astype(np.int64)) + 1

    def day_in_month(self, t: int, day: np.ndarray) -> np.ndarray:
        """The given day numbers (1–28) in month ``t`` as dates."""
        return self.starts[t] + (np.asarray(day, dtype=np.int64) - 1).astype("timedelta64[D]")
