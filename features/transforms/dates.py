"""Dates and instants of the input tables as numpy arrays, and back as UTC timestamps.

Input dates are naive, instants UTC (or naive, read as UTC); the feature tables compute on naive UTC
numpy arrays and write ``event_timestamp`` in UTC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def days_of(values: pd.Series | np.ndarray) -> np.ndarray:
    """Dates or timestamps (naive or UTC) as ``datetime64[D]``; NaT stays NaT."""
    series = pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.to_datetime(series).to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def instants_of(values: pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps (naive = UTC) as naive UTC ``datetime64[ns]``."""
    series = pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.to_datetime(series).to_numpy(dtype="datetime64[ns]")


def utc_timestamps(values: np.ndarray) -> pd.Series:
    """Naive UTC dates or instants as a series of UTC timestamps."""
    return pd.Series(pd.DatetimeIndex(values.astype("datetime64[ns]")).tz_localize("UTC"))


def day_of(moment: pd.Timestamp | None) -> np.datetime64 | None:
    """The UTC day of a moment; None stays None."""
    if moment is None:
        return None
    return np.datetime64(moment.tz_convert("UTC").tz_localize(None).date(), "D")
