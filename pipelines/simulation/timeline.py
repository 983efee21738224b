"""Calendar arithmetic on numpy ``datetime64[D]`` arrays, shared by the simulator and the oracle.

Both sides must count tenure, ages and month windows the same way, so they use these functions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

DAY = np.timedelta64(1, "D")
# A far date standing for "no end"; it fits datetime64[ns] so pandas can hold it too.
OPEN_END = np.datetime64("2200-01-01", "D")


def as_days(value: dt.date | np.ndarray) -> np.ndarray:
    """A date or an array of dates/timestamps as ``datetime64[D]``."""
    return np.asarray(value, dtype="datetime64[D]")


def year_of(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[Y]").astype(np.int64) + 1970


def month_index(days: np.ndarray) -> np.ndarray:
    """Months since 1970-01 (a month number that subtracts cleanly)."""
    return days.astype("datetime64[M]").astype(np.int64)


def first_of_month(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[M]").astype("datetime64[D]")


def last_of_month(days: np.ndarray) -> np.ndarray:
    return (days.astype("datetime64[M]") + 1).astype("datetime64[D]") - DAY


def day_of_month(days: np.ndarray) -> np.ndarray:
    return (days - first_of_month(days)).astype(np.int64) + 1


def add_months(days: np.ndarray, months: np.ndarray | int) -> np.ndarray:
    """The same day ``months`` later, clipped to the month's end (31 Jan + 1 month = 28 Feb)."""
    days = as_days(days)
    target = days.astype("datetime64[M]") + np.asarray(months, dtype=np.int64)
    offset = (days - first_of_month(days)).astype("timedelta64[D]")
    return np.minimum(target.astype("datetime64[D]") + offset, last_of_month(target))


def months_between(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Whole months from ``start`` to ``end`` (tenure in months); 0 when ``end`` is before."""
    start, end = as_days(start), as_days(end)
    months = month_index(end) - month_index(start)
    months -= day_of_month(end) < day_of_month(start)
    return np.maximum(months, 0)


def age_in_year(birth_year: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Age as the calendar year of ``days`` minus the birth year (birthdays are not known)."""
    return year_of(as_days(days)) - np.asarray(birth_year, dtype=np.int64)


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
