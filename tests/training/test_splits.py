"""The time split: periods by time, and purged rows whose label reaches validation."""

from __future__ import annotations

import pandas as pd
import pytest

from training.splits import PURGED, TRAIN, TUNE, VALIDATION, month_split


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_no_row_of_the_validation_period_reaches_training() -> None:
    # Monthly offers from January to December; labels are known 14 days after showing.
    times = pd.Series(
        [utc(f"2026-{month:02d}-{d:02d} 06:00") for month in range(1, 13) for d in (1, 20, 28)]
    )
    split = month_split(times, pd.Timedelta(days=14), validation_months=2, tune_months=1)
    assert split.validation_start == utc("2026-11-01")
    assert split.validation_end == utc("2027-01-01")
    period = split.assign(times)
    validation = times[period == VALIDATION]
    fitted_on = times[period.isin([TRAIN, TUNE])]
    assert (validation >= split.validation_start).all()
    assert len(validation) == 6
    # Every row used for fitting has its label known before validation starts.
    assert (fitted_on + pd.Timedelta(days=14) <= split.validation_start).all()
    # The constructed leak: shown 20 and 28 October, answered in November. Both are purged.
    assert set(times[period == PURGED]) == {utc("2026-10-20 06:00"), utc("2026-10-28 06:00")}
    assert (times[period == TUNE] >= split.tune_start).all()
    assert (times[period == TRAIN] < split.tune_start).all()


def test_churn_rows_whose_three_month_label_reaches_validation_are_purged() -> None:
    months = pd.Series(pd.date_range("2025-01-01", "2026-06-01", freq="MS", tz="UTC"))
    split = month_split(months, pd.DateOffset(months=3), validation_months=2, tune_months=1)
    period = split.assign(months)
    assert list(months[period == VALIDATION]) == [utc("2026-05-01"), utc("2026-06-01")]
    for moment in months[period.isin([TRAIN, TUNE])]:
        assert moment + pd.DateOffset(months=3) <= utc("2026-05-01")
    assert set(months[period == PURGED]) == {utc("2026-03-01"), utc("2026-04-01")}


def test_a_split_without_training_months_is_refused() -> None:
    months = pd.Series(pd.date_range("2026-01-01", "2026-05-01", freq="MS", tz="UTC"))
    with pytest.raises(ValueError, match="too few months"):
        month_split(months, pd.DateOffset(months=3), validation_months=2)
