"""The batch run's feature source: the newest values as of the invoice date, never later ones."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONSENT,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
    FeatureType,
)
from pipelines.frame_source import (
    DECISION_VIEWS,
    FrameFeatureSource,
    latest_rows,
    read_decision_frames,
    start_of_day,
)
from serving.decision.inputs import usage_as_of

INVOICE_DATE = dt.date(2026, 11, 28)
AS_OF = start_of_day(INVOICE_DATE)

_DEFAULTS: dict[FeatureType, Any] = {"float": 1.5, "int": 1, "str": "x"}


def _view(
    schema: dict[str, FeatureType], rows: list[tuple[str, str, dict[str, Any]]]
) -> pd.DataFrame:
    """A feature frame: (customer, UTC timestamp, overrides) per row, defaults elsewhere."""
    records = []
    for customer, stamp, values in rows:
        record = {"customer_id": customer, "event_timestamp": pd.Timestamp(stamp, tz="UTC")}
        record.update({name: _DEFAULTS[kind] for name, kind in schema.items()})
        record.update(values)
        records.append(record)
    return pd.DataFrame(records)


def _frames() -> dict[str, pd.DataFrame]:
    return {
        "customer_consent": _view(
            CUSTOMER_CONSENT,
            [
                ("C1", "2024-03-01", {"consent_marketing": 0, "birth_year": 1980}),
                ("C1", "2026-10-02 09:30", {"consent_marketing": 1, "birth_year": 1980}),
                # Withdrawn after the invoice date's start: must not be seen yet.
                ("C1", "2026-11-28 00:00:01", {"consent_marketing": 0, "birth_year": 1980}),
                ("C2", "2026-01-01", {"segment": "business"}),
                # Signed up after the invoice date: not yet a customer then.
                ("C3", "2026-11-29", {}),
            ],
        ),
        "customer_usage": _view(
            CUSTOMER_USAGE,
            [
                ("C1", "2026-10-01", {"data_gb_m1": 11.0, "usage_month_m1": "2026-09-01"}),
                ("C1", "2026-11-01", {"data_gb_m1": 12.5, "usage_month_m1": "2026-10-01"}),
                (
                    "C1",
                    "2026-12-01",
                    {
                        "data_gb_m1": 99.0,
                        "usage_month_m1": "2026-11-01",
                        "sms_m1": 40,
                        "sms_m2": 31,
                    },
                ),
                ("C2", "2026-11-01", {"data_gb_m1": float("nan")}),
            ],
        ),
        "customer_contract": _view(
            CUSTOMER_CONTRACT,
            [
                ("C1", "2026-11-01", {"current_plan_id": "PLAN_5GB", "tenure_months": 30}),
                ("C1", "2026-12-01", {"current_plan_id": "PLAN_30GB", "tenure_months": 31}),
            ],
        ),
        "customer_billing": _view(
            CUSTOMER_BILLING,
            [
                # Dated at 00:00 on the invoice date: the invoice's own billing facts count.
                ("C1", "2026-10-28", {"invoice_amount_last_sek": 199.0}),
                ("C1", "2026-11-28", {"invoice_amount_last_sek": 249.0, "unpaid_reminders": 2}),
            ],
        ),
        "customer_profile": _view(
            CUSTOMER_PROFILE,
            [("C1", "2026-11-01", {"offers_declined_6m": 2, "satisfaction": float("nan")})],
        ),
    }


def test_consent_is_the_newest_row_at_or_before_the_invoice_dates_start() -> None:
    source = FrameFeatureSource.from_frames(_frames(), AS_OF)
    consent = source.read_consent("C1")
    assert consent is not None
    assert consent["consent_marketing"] == 1
    assert consent["birth_year"] == 1980


def test_values_dated_after_the_moment_are_never_seen() -> None:
    source = FrameFeatureSource.from_frames(_frames(), AS_OF)
    account = source.read_account("C1")
    assert account["data_gb_m1"] == 12.5
    assert account["usage_month_m1"] == "2026-10-01"
    assert account["current_plan_id"] == "PLAN_5GB"
    assert account["tenure_months"] == 30
    # The billing row at exactly 00:00 on the invoice date is included (<=, not <).
    assert account["invoice_amount_last_sek"] == 249.0
    assert account["unpaid_reminders"] == 2


def test_usage_newer_than_the_billing_period_is_moved_back_and_the_rest_kept() -> None:
    """Read on 2 December, C1's newest usage row describes November; an invoice dated 28
    November describes October, so C1's row is moved back exactly as the engine moves a row it
    reads (usage_as_of), and C2's row, whose month is unknown, is kept as it is."""
    as_of = start_of_day(dt.date(2026, 12, 2))
    unmoved = FrameFeatureSource.from_frames(_frames(), as_of)
    moved = FrameFeatureSource.from_frames(_frames(), as_of, invoice_date=INVOICE_DATE)
    newest = unmoved.read_account("C1")
    assert newest["usage_month_m1"] == "2026-11-01" and newest["data_gb_m1"] == 99.0
    account = moved.read_account("C1")
    assert account == {**newest, **usage_as_of(newest, INVOICE_DATE)}
    assert account["usage_month_m1"] == "2026-10-01"
    assert account["data_gb_m1"] == newest["data_gb_m2"]
    assert newest["sms_m1"] == 40 and account["sms_m1"] == 31  # October's SMS, as billed
    assert moved.read_account("C2") == unmoved.read_account("C2")
    # An invoice dated in December describes November: nothing moves.
    december = FrameFeatureSource.from_frames(_frames(), as_of, invoice_date=dt.date(2026, 12, 2))
    assert december.read_account("C1") == newest


def test_a_day_earlier_sees_the_earlier_rows() -> None:
    source = FrameFeatureSource.from_frames(_frames(), start_of_day(dt.date(2026, 10, 31)))
    account = source.read_account("C1")
    assert account["data_gb_m1"] == 11.0
    assert account["invoice_amount_last_sek"] == 199.0
    # No contract row yet as of then: every contract feature reads None, as Feast would.
    assert account["current_plan_id"] is None
    assert account["tenure_months"] is None


def test_values_come_back_as_python_scalars_and_missing_as_none() -> None:
    source = FrameFeatureSource.from_frames(_frames(), AS_OF)
    account = source.read_account("C1")
    assert type(account["tenure_months"]) is int
    assert type(account["data_gb_m1"]) is float
    assert source.read_profile("C1")["satisfaction"] is None
    assert source.read_profile("C1")["offers_declined_6m"] == 2
    assert source.read_account("C2")["data_gb_m1"] is None


def test_account_and_profile_hold_exactly_their_views_features() -> None:
    source = FrameFeatureSource.from_frames(_frames(), AS_OF)
    assert set(source.read_account("C1")) == {
        *CUSTOMER_USAGE,
        *CUSTOMER_CONTRACT,
        *CUSTOMER_BILLING,
    }
    assert set(source.read_profile("C2")) == set(CUSTOMER_PROFILE)
    assert all(value is None for value in source.read_profile("C2").values())


def test_unknown_customer_reads_no_consent() -> None:
    source = FrameFeatureSource.from_frames(_frames(), AS_OF)
    assert source.read_consent("C404") is None
    # Known only from a row dated after the moment: unknown as of the moment.
    assert source.read_consent("C3") is None
    assert source.customers() == 2


def test_latest_rows_applies_a_time_to_live() -> None:
    frame = _frames()["customer_usage"]
    fresh = latest_rows(frame, AS_OF, ["data_gb_m1"], ttl=dt.timedelta(days=40))
    assert fresh["customer_id"].tolist() == ["C1", "C2"]
    stale = latest_rows(frame, AS_OF, ["data_gb_m1"], ttl=dt.timedelta(days=20))
    assert stale.empty
    unlimited = latest_rows(frame, AS_OF, ["data_gb_m1"], ttl=dt.timedelta(0))
    assert unlimited["customer_id"].tolist() == ["C1", "C2"]
    assert unlimited["data_gb_m1"].iloc[0] == 12.5


def test_two_rows_at_one_instant_the_later_in_the_frame_holds() -> None:
    frame = _view(
        CUSTOMER_USAGE,
        [("C1", "2026-11-01", {"data_gb_m1": 1.0}), ("C1", "2026-11-01", {"data_gb_m1": 2.0})],
    )
    latest = latest_rows(frame, AS_OF, ["data_gb_m1"])
    assert latest["data_gb_m1"].tolist() == [2.0]


def test_naive_timestamps_are_read_as_utc() -> None:
    frame = _frames()["customer_usage"]
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize(None)
    latest = latest_rows(frame, AS_OF, ["data_gb_m1"])
    assert latest.set_index("customer_id").loc["C1", "data_gb_m1"] == 12.5


def test_reading_parquet_keeps_only_the_wanted_customers_and_past_rows(tmp_path: Path) -> None:
    paths = {}
    for view, frame in _frames().items():
        paths[view] = tmp_path / f"{view}.parquet"
        frame.to_parquet(paths[view], index=False)
    frames = read_decision_frames(paths, AS_OF, ["C1"])
    assert set(frames) == set(DECISION_VIEWS)
    usage = frames["customer_usage"]
    assert usage["customer_id"].unique().tolist() == ["C1"]
    assert usage["event_timestamp"].max() == pd.Timestamp("2026-11-01", tz="UTC")
    source = FrameFeatureSource.from_frames(frames, AS_OF)
    assert source.read_account("C1")["data_gb_m1"] == 12.5
    assert source.read_consent("C2") is None
    assert not math.isnan(source.read_account("C1")["current_monthly_fee_sek"])


def test_a_missing_view_is_refused() -> None:
    frames = _frames()
    del frames["customer_profile"]
    with pytest.raises(KeyError, match="customer_profile"):
        FrameFeatureSource.from_frames(frames, AS_OF)


def test_reading_no_customers_gives_empty_frames(tmp_path: Path) -> None:
    paths = {}
    for view, frame in _frames().items():
        paths[view] = tmp_path / f"{view}.parquet"
        frame.to_parquet(paths[view], index=False)
    frames = read_decision_frames(paths, AS_OF, [])
    assert all(frame.empty for frame in frames.values())
    source = FrameFeatureSource.from_frames(frames, AS_OF)
    assert source.customers() == 0
    assert source.read_consent("C1") is None


def _consent_frames() -> dict[str, pd.DataFrame]:
    """Five customers with profile rows; only P1's consent lets a decision read them."""
    granted = {
        "consent_marketing": 1,
        "consent_profiling": 1,
        "objected_marketing": 0,
        "birth_year": 1980,
    }
    customers = {
        "P1": granted,
        "P2": {**granted, "consent_profiling": 0},
        "P3": {**granted, "objected_marketing": 1},
        "P4": {**granted, "consent_marketing": 0},
        "P5": {**granted, "birth_year": 2008},  # possibly 17 on the invoice date
        # Granted profiling only after the invoice date's start: not yet.
        "P6": {**granted, "consent_profiling": 0},
    }
    consent_rows = [(c, "2026-01-01", values) for c, values in customers.items()]
    consent_rows.append(("P6", "2026-11-28 08:00", granted))
    frames = _frames()
    frames["customer_consent"] = _view(CUSTOMER_CONSENT, consent_rows)
    frames["customer_profile"] = _view(
        CUSTOMER_PROFILE, [(c, "2026-11-01", {"offers_declined_6m": 1}) for c in customers]
    )
    return frames


@pytest.mark.parametrize("wanted", [None, ["P1", "P2", "P3", "P4", "P5", "P6"]])
def test_profile_rows_of_a_customer_who_may_not_be_profiled_are_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wanted: list[str] | None
) -> None:
    import pipelines.frame_source as frame_source

    paths = {}
    for view, frame in _consent_frames().items():
        paths[view] = tmp_path / f"{view}.parquet"
        frame.to_parquet(paths[view], index=False)
    scanned: dict[str, list[str]] = {}
    read = frame_source.read_view_frame

    def spy(path: Path, features: Any, as_of: dt.datetime, customer_ids: Any = None) -> Any:
        frame = read(path, features, as_of, customer_ids)
        scanned[path.stem] = sorted(frame["customer_id"].unique())
        return frame

    monkeypatch.setattr(frame_source, "read_view_frame", spy)
    frames = frame_source.read_decision_frames(paths, AS_OF, wanted)
    # Consent is read first, and the profile scan itself only asks for P1.
    assert next(iter(scanned)) == "customer_consent"
    assert scanned["customer_profile"] == ["P1"]
    assert frames["customer_profile"]["customer_id"].unique().tolist() == ["P1"]
    assert scanned["customer_consent"] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    source = FrameFeatureSource.from_frames(frames, AS_OF)
    assert source.read_profile("P1")["offers_declined_6m"] == 1
    assert all(value is None for value in source.read_profile("P2").values())
