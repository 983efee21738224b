"""One rule for time: an invoice describes the last calendar month that ended before its date."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.transforms.customer_usage import usage_features
from serving.decision.inputs import (
    as_float,
    billing_period_start,
    usage_as_of,
    usage_columns_as_of,
    usage_rows_as_of,
)


@pytest.mark.parametrize(
    ("invoice_date", "period"),
    [
        (dt.date(2026, 11, 20), dt.date(2026, 10, 1)),
        (dt.date(2026, 11, 1), dt.date(2026, 10, 1)),
        (dt.date(2026, 11, 30), dt.date(2026, 10, 1)),
        (dt.date(2027, 1, 5), dt.date(2026, 12, 1)),
    ],
)
def test_the_billing_period_is_the_last_month_ended_before_the_invoice(
    invoice_date: dt.date, period: dt.date
) -> None:
    assert billing_period_start(invoice_date) == period


def _usage(months: int) -> pd.DataFrame:
    """One customer's monthly usage, April to November 2026 (eight months), values by hand."""
    starts = pd.date_range("2026-11-01", periods=months, freq="-1MS")[::-1]
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "customer_id": "C1",
            "month": starts.date,
            "data_gb": rng.uniform(2, 12, months).round(2),
            "voice_minutes": rng.uniform(50, 300, months).round(0),
            "sms": rng.integers(0, 90, months),
            "roaming_days": rng.integers(0, 4, months),
            "roaming_data_gb": rng.uniform(0, 2, months).round(2),
            "overage_sek": np.where(rng.random(months) < 0.5, 0.0, 58.0),
        }
    )


def _row(frame: pd.DataFrame, month: str) -> dict[str, Any]:
    table = usage_features(frame)
    stamp = pd.Timestamp(month, tz="UTC") + pd.offsets.MonthBegin(1)
    row = table[table["event_timestamp"] == stamp].iloc[0].to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _same(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, float | int) and isinstance(right, float | int):
        return math.isclose(float(left), float(right), rel_tol=1e-9, abs_tol=1e-9)
    return bool(left == right)


def test_an_invoice_before_the_newest_month_ended_is_described_as_the_batch_sees_it() -> None:
    """The online row holds November; an invoice of 20 November describes October exactly as the
    October snapshot (what the batch reads as of that date) does, SMS and roaming days too, but
    for the sixth month back, which November's row no longer holds."""
    frame = _usage(8)
    november, october = _row(frame, "2026-11-01"), _row(frame, "2026-10-01")
    assert november["usage_month_m1"] == "2026-11-01"
    shifted = usage_as_of(november, dt.date(2026, 11, 20))
    for name, expected in october.items():
        if name in {"customer_id", "event_timestamp"}:
            continue
        if name.endswith("_m6"):
            # October's sixth month back is May, which November's row no longer holds.
            assert shifted[name] == ("" if name.startswith("plan_id") else None), name
        elif name.endswith("_6m") or name.endswith("_trend_6m"):
            continue  # computed without that sixth month
        else:
            assert _same(shifted[name], expected), (name, shifted[name], expected)
    # What the invoice shows: October's SMS, an integer as the store holds it.
    assert shifted["sms_m1"] == frame["sms"].iloc[-2] and isinstance(shifted["sms_m1"], int)
    assert shifted["sms_avg_3m"] == pytest.approx(frame["sms"].iloc[-4:-1].mean())
    # October's six months of roaming days are May to October; November's row no longer holds
    # May, so the five known months' mean counts for six, not a sum five sixths as long.
    assert october["roaming_days_6m"] == frame["roaming_days"].iloc[-7:-1].sum()
    june_to_october = frame["roaming_days"].iloc[-6:-1]
    assert shifted["roaming_days_6m"] == int(np.floor(june_to_october.mean() * 6 + 0.5))


def test_a_short_history_moved_back_sums_every_roaming_day_it_had() -> None:
    """A customer of four months (August to November) had no months before: the moved window's
    roaming days are the exact sum of August to October, as the transform gives October."""
    frame = _usage(4)
    november, october = _row(frame, "2026-11-01"), _row(frame, "2026-10-01")
    shifted = usage_as_of(november, dt.date(2026, 11, 20))
    assert shifted["roaming_days_6m"] == october["roaming_days_6m"]
    assert october["roaming_days_6m"] == frame["roaming_days"].iloc[:3].sum()


def test_an_invoice_in_the_month_after_the_newest_is_left_as_it_is() -> None:
    november = _row(_usage(8), "2026-11-01")
    assert usage_as_of(november, dt.date(2026, 12, 5)) is november
    assert usage_as_of(november, dt.date(2027, 2, 5)) is november


def test_a_billing_period_older_than_the_row_holds_has_no_usage() -> None:
    november = _row(_usage(8), "2026-11-01")
    shifted = usage_as_of(november, dt.date(2026, 4, 20))  # March: seven months back
    assert shifted["usage_month_m1"] is None
    assert all(shifted[f"data_gb_m{m}"] is None for m in range(1, 7))


def test_rows_moved_together_equal_each_row_moved_alone() -> None:
    """The invoice run moves a slice's rows at once: each equals the engine's one-row move, value
    for value and key for key, and the engine leaves a moved row as it is."""
    rows = []
    for months, newest in [
        (8, "2026-11-01"),
        (8, "2026-09-01"),
        (3, "2026-11-01"),
        (8, "2026-06-01"),
    ]:
        frame = _usage(months)
        rows.append(_row(frame, newest))
    rows.append(dict.fromkeys(rows[0]))  # a customer without usage rows
    invoice_date = dt.date(2026, 11, 20)  # October: lags 1, none, 1, none, unknown
    together = usage_rows_as_of(rows, invoice_date)
    alone = [usage_as_of(row, invoice_date) for row in rows]
    assert [list(row.items()) for row in together] == [list(row.items()) for row in alone]
    assert together[1] is rows[1] and together[3] is rows[3] and together[4] is rows[4]
    assert together[0]["usage_month_m1"] == "2026-10-01"
    assert together[0]["data_gb_m1"] == rows[0]["data_gb_m2"]
    assert all(usage_as_of(row, invoice_date) is row for row in together)
    many = usage_rows_as_of(rows, dt.date(2026, 7, 10))  # June: November's row moved five back
    assert many[0]["data_gb_m1"] == rows[0]["data_gb_m6"]
    assert many[0]["data_gb_m2"] is None
    assert [list(row.items()) for row in many] == [
        list(usage_as_of(row, dt.date(2026, 7, 10)).items()) for row in rows
    ]
    # The API decides invoices of several dates together: each row moved to its own date's month.
    dates = [
        dt.date(2026, 7, 10),
        dt.date(2026, 11, 20),
        dt.date(2026, 12, 5),
        dt.date(2026, 7, 10),
    ]
    dates.append(dt.date(2026, 11, 20))
    mixed = usage_rows_as_of(rows, dates)
    assert [list(row.items()) for row in mixed] == [
        list(usage_as_of(row, day).items()) for row, day in zip(rows, dates, strict=True)
    ]
    assert [row["usage_month_m1"] for row in mixed[:3]] == [
        "2026-06-01",
        "2026-09-01",
        "2026-11-01",
    ]
    with pytest.raises(ValueError, match="5 rows but 2 invoice dates"):
        usage_rows_as_of(rows, dates[:2])


def _customers() -> list[dict[str, Any]]:
    """Rows newest in November, September, November (three months known) and June, and one
    customer without usage rows."""
    rows = [
        _row(_usage(months), newest)
        for months, newest in [
            (8, "2026-11-01"),
            (8, "2026-09-01"),
            (3, "2026-11-01"),
            (8, "2026-06-01"),
        ]
    ]
    return [*rows, dict.fromkeys(rows[0])]


def _typed(items: Any) -> list[tuple[str, type, Any]]:
    """Name, type and value of each feature: a numpy number where the engine gives a Python float
    (or an int where it gives a float) differs here, not only in value."""
    return [(name, type(value), value) for name, value in items]


def _read_back(
    columns: dict[str, list[Any]], moved: dict[str, list[Any]]
) -> list[list[tuple[str, type, Any]]]:
    names = list(columns)
    count = len(columns[names[0]])
    return [
        _typed((name, moved.get(name, columns[name])[position]) for name in names)
        for position in range(count)
    ]


@pytest.mark.parametrize(
    ("invoice_date", "first_customers_month"),
    [
        (dt.date(2026, 11, 20), "2026-10-01"),
        (dt.date(2026, 7, 10), "2026-06-01"),
        (dt.date(2026, 4, 20), None),
        (dt.date(2026, 12, 5), "2026-11-01"),
    ],
)
def test_a_view_moved_column_by_column_reads_back_each_row_moved_alone(
    invoice_date: dt.date, first_customers_month: str | None
) -> None:
    """The invoice run moves a slice's usage view as columns: every customer reads back, value
    for value and in the row's key order, what the engine's one-row move gives, whether some
    rows move (20 November, 10 July), every customer with usage (20 April, past what the rows
    hold) or none (5 December)."""
    rows = _customers()
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    moved = usage_columns_as_of(columns, invoice_date)
    expected = [_typed(usage_as_of(row, invoice_date).items()) for row in rows]
    assert _read_back(columns, moved) == expected
    assert _read_back(columns, moved)[0][list(columns).index("usage_month_m1")][2] == (
        first_customers_month
    )
    assert (moved == {}) == (invoice_date == dt.date(2026, 12, 5))
    # The columns given are left as they were.
    assert [row[name] for row in rows for name in rows[0]] == [
        columns[name][position] for position in range(len(rows)) for name in rows[0]
    ]


def test_a_view_whose_every_row_moves_and_one_read_as_text() -> None:
    """When every row moves the new columns are the moved values themselves; a month given as
    text (a store that keeps numbers as text) is read as the engine's ``as_float`` reads it."""
    rows = [_customers()[0], _customers()[2]]
    rows[1]["data_gb_m2"] = "3.25"
    rows[1]["voice_minutes_m2"] = ""
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    moved = usage_columns_as_of(columns, dt.date(2026, 11, 20))
    assert _read_back(columns, moved) == [
        _typed(usage_as_of(row, dt.date(2026, 11, 20)).items()) for row in rows
    ]
    assert moved["data_gb_m1"][1] == 3.25 and moved["voice_minutes_m1"][1] is None
    assert set(moved) <= set(columns)  # the move sets no feature the view lacks


def test_a_view_without_a_feature_the_move_sets_is_refused_by_name() -> None:
    rows = _customers()
    columns = {name: [row[name] for row in rows] for name in rows[0] if name != "sms_m1"}
    with pytest.raises(KeyError, match="lacks features the move reads or sets: \\['sms_m1'\\]"):
        usage_columns_as_of(columns, dt.date(2026, 12, 5))


_MONTH_VALUE = st.one_of(
    st.none(),
    st.just(""),
    st.just(0.0),
    st.just(-0.0),  # equal to 0.0: which of the two is the largest month keeps its sign
    st.just(math.inf),
    st.floats(min_value=0.0, max_value=5000.0, allow_nan=False),
    st.integers(min_value=0, max_value=400),
)
_MEASURES = ("data_gb", "voice_minutes", "roaming_data_gb", "overage_sek")


def _usage_row(values: list[Any], newest: dt.date) -> dict[str, Any]:
    return {
        **{
            f"{measure}_m{month}": values[index * 6 + month - 1]
            for index, measure in enumerate(_MEASURES)
            for month in range(1, 7)
        },
        "usage_month_m1": newest.isoformat(),
    }


@settings(max_examples=300, deadline=None)
@given(
    months=st.lists(st.lists(_MONTH_VALUE, min_size=24, max_size=24), min_size=7, max_size=9),
    lags=st.lists(st.integers(min_value=1, max_value=8), min_size=9, max_size=9),
)
def test_a_row_moved_alone_equals_it_moved_among_many(
    months: list[list[Any]], lags: list[int]
) -> None:
    """The API moves its one invoice's row in plain Python and a batch's rows over arrays: each
    moved value is the same, type and last bit, whatever is known or unknown in which month and
    however far the row moves (past six months nothing is known)."""
    invoice_date = dt.date(2026, 4, 5)  # March
    rows = [
        _usage_row(values, dt.date(2026, 3 + lag, 1))
        for values, lag in zip(months, lags, strict=False)
    ]
    rows.append(_usage_row(months[0], dt.date(2026, 3, 1)))  # March's own row: left as it is
    together = usage_rows_as_of(rows, invoice_date)  # seven rows or more move: over arrays
    for row, moved_with_others in zip(rows, together, strict=True):
        alone = usage_rows_as_of([row], invoice_date)[0]
        assert [(key, repr(value), type(value)) for key, value in alone.items()] == [
            (key, repr(value), type(value)) for key, value in moved_with_others.items()
        ]
    assert together[-1] is rows[-1]
    lag = lags[0]
    expected_m1 = as_float(rows[0][f"data_gb_m{1 + lag}"]) if lag < 6 else math.nan
    assert (None if math.isnan(expected_m1) else expected_m1) == together[0]["data_gb_m1"]
    assert together[0]["usage_month_m1"] == ("2026-03-01" if lag < 6 else None)


def test_the_plans_that_billed_each_month_move_with_the_months() -> None:
    """November's row, read for an invoice of 20 November, describes October: October's plan is
    the one that billed it, in the row, in rows moved together and in a view moved by column."""
    row = {
        **_row(_usage(8), "2026-11-01"),
        **{f"plan_id_m{m}": plan for m, plan in enumerate(["P_NOV", "P_OCT", *"ABCD"], 1)},
    }
    moved = usage_as_of(row, dt.date(2026, 11, 20))
    assert [moved[f"plan_id_m{m}"] for m in range(1, 7)] == ["P_OCT", *"ABCD", ""]
    two_back = usage_as_of(row, dt.date(2026, 10, 20))
    assert [two_back[f"plan_id_m{m}"] for m in range(1, 7)] == [*"ABCD", "", ""]
    many = usage_rows_as_of([row] * 8, dt.date(2026, 11, 20))
    assert all(each["plan_id_m1"] == "P_OCT" and each["plan_id_m6"] == "" for each in many)
    columns = usage_columns_as_of(
        {name: [value] * 3 for name, value in row.items()}, dt.date(2026, 11, 20)
    )
    assert columns["plan_id_m1"] == ["P_OCT"] * 3 and columns["plan_id_m5"] == ["D"] * 3
