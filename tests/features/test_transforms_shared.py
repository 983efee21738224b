"""What the feature views share: date conversions, the per-customer event index, trends, shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.trends import SlopeSums, least_squares_slope, window_stats
from features.transforms.dates import day_of, days_of, instants_of, utc_timestamps
from features.transforms.events import EventIndex, monthly_grid, take_rows
from features.transforms.frames import empty_table
from features.views import CUSTOMER_CONSENT


def days(*texts: str) -> np.ndarray:
    return np.array(texts, dtype="datetime64[D]")


def test_dates_and_instants_are_read_as_utc() -> None:
    stockholm = pd.Series(pd.to_datetime(["2026-03-01 00:30"]).tz_localize("Europe/Stockholm"))
    # 00:30 in Stockholm is still the last day of February in UTC.
    assert days_of(stockholm)[0] == np.datetime64("2026-02-28")
    assert days_of(pd.Series([pd.Timestamp("2026-03-05 17:00"), pd.NaT]))[0] == np.datetime64(
        "2026-03-05"
    )
    assert np.isnat(days_of(pd.Series([pd.Timestamp("2026-03-05"), pd.NaT]))[1])
    assert instants_of(stockholm)[0] == np.datetime64("2026-02-28T23:30", "ns")
    stamps = utc_timestamps(days("2026-01-01"))
    assert stamps.iloc[0] == pd.Timestamp("2026-01-01", tz="UTC")
    assert day_of(pd.Timestamp("2026-01-31 23:30", tz="UTC")) == np.datetime64("2026-01-31")
    assert day_of(None) is None


def test_the_event_index_counts_and_finds_each_customers_events() -> None:
    # Customer 0 has events on 1 and 10 March, customer 1 on 5 March.
    index = EventIndex(np.array([0, 1, 0]), days("2026-03-01", "2026-03-05", "2026-03-10"))
    codes = np.array([0, 0, 0, 1, 1])
    times = days("2026-02-28", "2026-03-01", "2026-03-11", "2026-03-05", "2026-03-04")
    assert index.count(codes, times).tolist() == [0, 0, 2, 0, 0]
    assert index.count(codes, times, inclusive=True).tolist() == [0, 1, 2, 1, 0]
    assert index.latest(codes, times).tolist() == [-1, 0, 2, 1, -1]
    assert index.latest(codes, times, inclusive=False).tolist() == [-1, -1, 2, -1, -1]
    taken = take_rows(np.array([True, False, True]), index.latest(codes, times), missing=0.0)
    assert taken.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    # No events of a purpose at all: every row gets the missing value.
    assert take_rows(np.array([]), np.array([-1, -1]), missing=0.0).tolist() == [0.0, 0.0]
    assert np.isnan(take_rows(np.array([]), np.array([-1]))).all()


def test_the_monthly_grid_is_the_first_day_then_every_month_start() -> None:
    codes, grid = monthly_grid(
        np.array([7, 8, 9]),
        days("2026-01-15", "2026-03-01", "NaT"),
        days("2026-03-20", "2026-03-01", "2026-05-01"),
    )
    pairs = sorted(zip(codes.tolist(), grid.astype(str).tolist(), strict=True))
    assert pairs == [
        (7, "2026-01-15"),
        (7, "2026-02-01"),
        (7, "2026-03-01"),
        (8, "2026-03-01"),
    ]


def test_slopes_and_window_statistics_count_only_known_values() -> None:
    x = np.array([[0.0, -1.0, -2.0], [0.0, -1.0, -2.0]])
    y = np.array([[5.0, 3.0, 1.0], [5.0, np.nan, np.nan]])
    slopes = least_squares_slope(x, y)
    assert slopes[0] == 2.0 and np.isnan(slopes[1])
    stats = window_stats(np.array([[4.0, np.nan, 1.0], [np.nan, np.nan, np.nan]]), (1, 3))
    assert stats["avg_1m"][0] == 4.0 and stats["max_3m"][0] == 4.0
    assert stats["avg_3m"][0] == 2.5
    assert np.isnan(stats["avg_3m"][1]) and np.isnan(stats["max_1m"][1])


def test_a_slope_over_whole_rows_equals_the_sums_added_a_month_at_a_time() -> None:
    """The usage trend (whole rows at once) and the billing trend (SlopeSums, a month at a time)
    are the same least-squares slope, to the last bit."""
    rng = np.random.default_rng(3)
    y = rng.normal(20.0, 8.0, size=(500, 6))
    y[rng.random(y.shape) < 0.25] = np.nan
    x = np.broadcast_to(-np.arange(6.0), y.shape).copy()
    x[rng.random(x.shape) < 0.05] = np.nan
    sums = SlopeSums((len(y),))
    for month in range(y.shape[1]):
        known = ~(np.isnan(x[:, month]) | np.isnan(y[:, month]))
        sums.add((slice(None),), x[:, month], y[:, month], known)
    month_by_month = sums.slope()
    whole_rows = least_squares_slope(x, y)
    assert np.isnan(whole_rows).sum() > 0  # rows with fewer than two known months
    assert np.array_equal(whole_rows, month_by_month, equal_nan=True)


def test_an_empty_table_has_the_views_columns_and_types() -> None:
    table = empty_table(CUSTOMER_KEY, CUSTOMER_CONSENT)
    assert table.empty
    assert list(table.columns) == [CUSTOMER_KEY, EVENT_TIMESTAMP, *CUSTOMER_CONSENT]
    assert str(table[EVENT_TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert str(table["consent_marketing"].dtype) == "int64"
    assert table["segment"].dtype == object
