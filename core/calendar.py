"""Calendar arithmetic on numpy ``datetime64[D]`` arrays.

The simulator, the oracle and the feature tables must count tenure, ages and month windows the
same way, so they all use these functions.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

DAY = np.timedelta64(1, "D")


def as_days(value: dt.date | np.ndarray) -> np.ndarray:
    """A date or an array of dates/timestamps as ``datetime64[D]``."""
    return np.asarray(value, dtype="datetime64[D]")


def year_of(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[Y]").astype(np.int64) + 1970


def month_index(days: np.ndarray) -> np.ndarray:
    """Months since 1970-01 (a month number that subtracts cleanly)."""
    return days.astype("datetime64[M]").astype(np.int64)


def month_start(numbers: np.ndarray) -> np.ndarray:
    """The first day of each month number of :func:`month_index`."""
    return np.asarray(numbers, dtype=np.int64).astype("datetime64[M]").astype("datetime64[D]")


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


def months_until(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Months from ``start`` to ``end`` rounded up (a part month counts); 0 when not after."""
    start, end = as_days(start), as_days(end)
    months = month_index(end) - month_index(start)
    months += day_of_month(end) > day_of_month(start)
    return np.maximum(months, 0)


def age_in_year(birth_year: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Age as the calendar year of ``days`` minus the birth year (birthdays are not known)."""
    return year_of(as_days(days)) - np.asarray(birth_year, dtype=np.int64)
