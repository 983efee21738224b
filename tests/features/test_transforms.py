"""Feature tables from hand-made input tables: every value checked against the rule it follows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.calendar import months_between, months_until
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP, OFFER_KEY
from features.transforms import (
    billing_features,
    build_feature_tables,
    consent_features,
    contract_features,
    data_end,
    data_start,
    offer_features,
    profile_features,
    usage_features,
)
from features.views import FEATURE_VIEWS
from tests.factories import features as f

DTYPES = {"float": "float64", "int": "int64", "str": "object"}


@pytest.fixture(scope="module")
def world() -> dict[str, pd.DataFrame]:
    return f.small_world()


@pytest.fixture(scope="module")
def built(world: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return build_feature_tables(world, f.catalog())


def at(frame: pd.DataFrame, customer: str, moment: str) -> pd.Series:
    """The snapshot of ``customer`` dated exactly ``moment`` (UTC)."""
    rows = frame[
        (frame[CUSTOMER_KEY] == customer)
        & (frame[EVENT_TIMESTAMP] == pd.Timestamp(moment, tz="UTC"))
    ]
    assert len(rows) == 1, f"expected one row for {customer} at {moment}, found {len(rows)}"
    return rows.iloc[0]


def stamps(frame: pd.DataFrame, customer: str) -> list[str]:
    rows = frame[frame[CUSTOMER_KEY] == customer]
    return [moment.isoformat() for moment in rows[EVENT_TIMESTAMP]]


def contract_of_c9(contracts: list[dict], end: str, signup: str = "2025-01-01") -> pd.DataFrame:
    """The contract view of customer C9 with ``contracts``, built up to ``end``."""
    tables = f.tables(customers=[f.customer("C9", signup_date=signup)], contracts=contracts)
    return contract_features(
        tables["contracts"], tables["customers"], f.catalog(), pd.Timestamp(end, tz="UTC")
    )


def test_every_table_has_exactly_the_columns_and_types_of_columns_py(
    built: dict[str, pd.DataFrame],
) -> None:
    assert set(built) == set(FEATURE_VIEWS)
    for view, frame in built.items():
        key = OFFER_KEY if view == "offer_attributes" else CUSTOMER_KEY
        assert list(frame.columns) == [key, EVENT_TIMESTAMP, *FEATURE_VIEWS[view]], view
        assert str(frame[EVENT_TIMESTAMP].dtype) == "datetime64[ns, UTC]", view
        for name, kind in FEATURE_VIEWS[view].items():
            assert str(frame[name].dtype) == DTYPES[kind], f"{view}.{name}"
        assert not frame.duplicated([key, EVENT_TIMESTAMP]).any(), view


def test_data_end_is_the_first_day_after_the_newest_usage_month(world: dict) -> None:
    assert data_end(world) == pd.Timestamp("2026-07-01", tz="UTC")
    assert data_start(world) == pd.Timestamp("2026-01-01", tz="UTC")


def test_monthly_snapshots_begin_with_the_data(built: dict) -> None:
    # C1 signed on 2025-01-15; the data begin in January 2026.
    contract = built["customer_contract"]
    assert stamps(contract, "C1")[0] == "2026-01-01T00:00:00+00:00"
    assert at(contract, "C1", "2026-01-01")["tenure_months"] == 11
    assert stamps(built["customer_profile"], "C1")[0] == "2026-01-01T00:00:00+00:00"
    assert stamps(contract, "C3")[0] == "2026-01-01T00:00:00+00:00"


def test_usage_of_a_month_is_known_from_the_first_day_of_the_next(built: dict) -> None:
    usage = built["customer_usage"]
    assert stamps(usage, "C1") == [f"2026-0{month}-01T00:00:00+00:00" for month in range(2, 8)]
    april = at(usage, "C1", "2026-05-01")
    assert april["usage_month_m1"] == "2026-04-01"
    assert [april[f"data_gb_m{i}"] for i in range(1, 5)] == [6.5, 8.0, 7.0, 6.0]
    assert math.isnan(april["data_gb_m5"]) and math.isnan(april["data_gb_m6"])
    assert april["data_gb_avg_3m"] == pytest.approx((6.5 + 8.0 + 7.0) / 3)
    assert april["data_gb_avg_6m"] == pytest.approx((6.5 + 8.0 + 7.0 + 6.0) / 4)
    assert april["data_gb_max_3m"] == 8.0
    assert april["overage_sek_avg_3m"] == pytest.approx((43.5 + 87.0 + 58.0) / 3)
    assert april["months_over_allowance_6m"] == 4
    assert april["sms_m1"] == 5 and april["sms_avg_6m"] == 5.0


def test_usage_trend_is_the_least_squares_slope_per_month(built: dict) -> None:
    usage = built["customer_usage"]
    june = at(usage, "C2", "2026-07-01")  # C2 used 1, 2, …, 6 GB from January to June
    assert june["data_gb_trend_6m"] == pytest.approx(1.0)
    assert june["voice_minutes_trend_6m"] == pytest.approx(0.0)
    assert june["roaming_days_m1"] == 10
    assert june["roaming_days_6m"] == 0 + 2 + 4 + 6 + 8 + 10
    first = at(usage, "C2", "2026-02-01")
    assert math.isnan(first["data_gb_trend_6m"])  # one month is no trend


def test_each_usage_month_keeps_the_plan_it_was_billed_on() -> None:
    """The plan in force on a month's last day billed it: C9 moved from Mobil 15 GB to Mobil
    30 GB on 1 April, so March was billed on 15 GB and April on 30 GB; June, after the contract
    ended on 20 June, on the last one. January, before any contract, on none."""
    tables = f.tables(
        contracts=[
            f.contract("C9", "PLAN_15GB", "2026-02-01", valid_to="2026-03-31"),
            f.contract("C9", "PLAN_30GB", "2026-04-01", valid_to="2026-06-20"),
        ],
        usage_monthly=[f.usage("C9", f"2026-0{month}-01") for month in range(1, 7)],
    )
    usage = usage_features(tables["usage_monthly"], tables["contracts"])
    march, june = at(usage, "C9", "2026-04-01"), at(usage, "C9", "2026-07-01")
    assert (march["plan_id_m1"], march["plan_id_m2"], march["plan_id_m3"]) == (
        "PLAN_15GB",
        "PLAN_15GB",
        "",
    )
    assert [june[f"plan_id_m{i}"] for i in range(1, 7)] == [
        "PLAN_30GB",
        "PLAN_30GB",
        "PLAN_30GB",
        "PLAN_15GB",
        "PLAN_15GB",
        "",
    ]
    # SMS and roaming days of every month, as the other measures.
    assert [june[f"sms_m{i}"] for i in range(1, 7)] == [10] * 6
    # Without a contracts table the plans are unknown; the rest is the same.
    alone = usage_features(tables["usage_monthly"])
    assert set(alone["plan_id_m1"]) == {""}
    assert alone.drop(columns=[f"plan_id_m{i}" for i in range(1, 7)]).equals(
        usage.drop(columns=[f"plan_id_m{i}" for i in range(1, 7)])
    )


def test_contract_snapshots_follow_month_starts_and_changes(built: dict) -> None:
    contract = built["customer_contract"]
    assert stamps(contract, "C3") == [
        "2026-01-01T00:00:00+00:00",
        "2026-02-01T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
        "2026-04-01T00:00:00+00:00",
        "2026-04-10T00:00:00+00:00",
        "2026-05-01T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",
        "2026-07-01T00:00:00+00:00",
    ]
    before = at(contract, "C3", "2026-04-01")
    after = at(contract, "C3", "2026-04-10")
    assert (before["current_plan_id"], before["plan_changes_24m"]) == ("PLAN_15GB", 0)
    assert (after["current_plan_id"], after["plan_changes_24m"]) == ("PLAN_30GB", 1)
    assert after["current_monthly_fee_sek"] == 299.0
    assert after["current_new_customer_fee_sek"] == 279.0
    assert after["current_data_gb"] == 30.0 and math.isnan(after["current_voice_minutes"])


def test_contract_tenure_binding_and_unlimited_allowance(built: dict) -> None:
    contract = built["customer_contract"]
    c1 = at(contract, "C1", "2026-02-01")  # signed 2025-01-15
    assert c1["tenure_months"] == 12
    assert (c1["binding_end_date"], c1["months_to_binding_end"]) == ("", 0)
    c2 = at(contract, "C2", "2026-06-01")  # bound until 2027-01-01
    assert c2["tenure_months"] == 24
    assert (c2["binding_end_date"], c2["months_to_binding_end"]) == ("2027-01-01", 7)
    assert math.isnan(c2["current_data_gb"]) and c2["current_roaming_data_gb"] == 20.0


def test_a_binding_that_ended_keeps_its_date_for_invoices_dated_before_the_row() -> None:
    contract = contract_of_c9(
        [
            f.contract("C9", "PLAN_30GB", "2025-01-01", binding_end_date="2025-06-15"),
        ],
        "2025-08-01",
    )
    bound = at(contract, "C9", "2025-06-01")
    assert (bound["binding_end_date"], bound["months_to_binding_end"]) == ("2025-06-15", 1)
    # The row of 1 July comes after the binding's end; an invoice of 10 June read from it must
    # still see the customer bound then.
    ended = at(contract, "C9", "2025-07-01")
    assert (ended["binding_end_date"], ended["months_to_binding_end"]) == ("2025-06-15", 0)


def test_a_customer_who_left_has_no_contract_after_the_last_day() -> None:
    contract = contract_of_c9(
        [f.contract("C9", "PLAN_5GB", "2025-01-01", valid_to="2025-03-20")],
        "2025-07-01",
    )
    # No monthly row after the last day; one on the day after it, which says the customer left
    # and keeps the last contract's facts (their final invoice bills that plan).
    assert stamps(contract, "C9") == [
        "2025-01-01T00:00:00+00:00",
        "2025-02-01T00:00:00+00:00",
        "2025-03-01T00:00:00+00:00",
        "2025-03-21T00:00:00+00:00",
    ]
    assert at(contract, "C9", "2025-03-01")["contract_ended_on"] == ""
    left = at(contract, "C9", "2025-03-21")
    assert (left["contract_ended_on"], left["current_plan_id"]) == ("2025-03-20", "PLAN_5GB")
    assert left["current_monthly_fee_sek"] == 249.0


def test_a_notice_given_ahead_of_the_tables_end_has_its_row_already() -> None:
    # The contract ends after the data end: the row of the day after is written now, so that an
    # incremental materialize reaching that day loads it (no monthly row would follow it).
    contract = contract_of_c9(
        [f.contract("C9", "PLAN_5GB", "2025-01-01", valid_to="2025-07-15")],
        "2025-07-01",
    )
    assert stamps(contract, "C9")[-2:] == ["2025-07-01T00:00:00+00:00", "2025-07-16T00:00:00+00:00"]
    assert at(contract, "C9", "2025-07-01")["contract_ended_on"] == ""
    assert at(contract, "C9", "2025-07-16")["contract_ended_on"] == "2025-07-15"


def test_a_customer_who_comes_back_has_left_only_between_the_two_contracts() -> None:
    contract = contract_of_c9(
        [
            f.contract("C9", "PLAN_5GB", "2025-01-01", valid_to="2025-02-28"),
            f.contract("C9", "PLAN_15GB", "2025-05-10"),
        ],
        "2025-07-01",
    )
    rows = contract[contract[CUSTOMER_KEY] == "C9"]
    days = [stamp[:10] for stamp in stamps(contract, "C9")]
    ended = dict(zip(days, rows["contract_ended_on"], strict=True))
    assert ended == {
        "2025-01-01": "",
        "2025-02-01": "",
        "2025-03-01": "2025-02-28",  # the day after the last day: a month start here
        "2025-04-01": "2025-02-28",
        "2025-05-01": "2025-02-28",
        "2025-05-10": "",  # back on a new contract
        "2025-06-01": "",
        "2025-07-01": "",
    }


def test_a_contract_followed_at_once_by_the_next_leaves_no_row_of_its_end() -> None:
    contract = contract_of_c9(
        [
            f.contract("C9", "PLAN_5GB", "2025-01-01", valid_to="2025-02-14"),
            f.contract("C9", "PLAN_15GB", "2025-02-15"),
        ],
        "2025-04-01",
    )
    assert stamps(contract, "C9") == [
        "2025-01-01T00:00:00+00:00",
        "2025-02-01T00:00:00+00:00",
        "2025-02-15T00:00:00+00:00",
        "2025-03-01T00:00:00+00:00",
        "2025-04-01T00:00:00+00:00",
    ]
    assert set(contract["contract_ended_on"]) == {""}


def test_plan_changes_count_only_changes_within_24_months() -> None:
    contract = contract_of_c9(
        [
            f.contract("C9", "PLAN_5GB", "2022-01-01", valid_to="2022-05-31"),
            f.contract("C9", "PLAN_15GB", "2022-06-01", valid_to="2023-12-31"),
            f.contract("C9", "PLAN_15GB", "2024-01-01", valid_to="2024-09-30"),  # a renewal
            f.contract("C9", "PLAN_30GB", "2024-10-01"),
        ],
        "2024-11-01",
        signup="2022-01-01",
    )
    assert at(contract, "C9", "2024-05-01")["plan_changes_24m"] == 1
    # The window is (t - 24 months, t]: the change of 2022-06-01 leaves it on 2024-06-01.
    assert at(contract, "C9", "2024-06-01")["plan_changes_24m"] == 0
    assert at(contract, "C9", "2024-10-01")["plan_changes_24m"] == 1
    assert at(contract, "C9", "2024-10-01")["current_plan_id"] == "PLAN_30GB"


def test_billing_counts_fees_and_late_payments_known_on_the_invoice_date(built: dict) -> None:
    billing = built["customer_billing"]
    c1 = at(billing, "C1", "2026-05-05")
    assert c1["invoice_amount_last_sek"] == 179.0 + 43.5
    assert c1["invoice_amount_avg_3m"] == pytest.approx((266.0 + 237.0 + 222.5) / 3)
    assert c1["invoice_fee_last_sek"] == 29.0
    assert c1["invoice_fees_12m_sek"] == 4 * 29.0
    assert c1["late_payments_12m"] == 0
    # C2's February invoice, due 2026-03-12, was paid on 2026-03-20.
    assert at(billing, "C2", "2026-03-10")["late_payments_12m"] == 0
    april = at(billing, "C2", "2026-04-10")
    assert april["late_payments_12m"] == 1
    assert april["reminder_fees_12m_sek"] == 60.0
    assert april["days_past_due"] == 0 and april["unpaid_reminders"] == 0


def test_billing_trend_is_sek_per_month_over_six_months(built: dict) -> None:
    billing = built["customer_billing"]
    march = at(billing, "C2", "2026-03-10")
    # 449 on 2026-02-10 and 509 on 2026-03-10: 60 SEK over 28 days.
    assert march["invoice_amount_trend_6m"] == pytest.approx(60.0 / (28 / (365.25 / 12)))
    assert math.isnan(at(billing, "C2", "2026-02-10")["invoice_amount_trend_6m"])


def test_reminders_and_collection_count_only_once_their_day_has_passed() -> None:
    # Due 2026-02-09, never paid, two reminders (days 10 and 24) and collection (day 45).
    tables = f.tables(
        invoices=[
            f.invoice("C9", "2026-01-10", paid_date=None, reminders=2, sent_to_collection=True),
            f.invoice("C9", "2026-02-10", invoice_id="B"),
            f.invoice("C9", "2026-02-25", invoice_id="C"),
            f.invoice("C9", "2026-03-10", invoice_id="D"),
            f.invoice("C9", "2026-03-30", invoice_id="E"),
        ]
    )
    billing = billing_features(tables["invoices"])
    expected = {
        "2026-01-10": (0, 0, 0),  # not yet due
        "2026-02-10": (1, 0, 0),  # one day past due: no reminder sent yet
        "2026-02-25": (16, 1, 0),
        "2026-03-10": (29, 2, 0),
        "2026-03-30": (49, 2, 1),
    }
    for day, (past_due, reminders, collection) in expected.items():
        row = at(billing, "C9", day)
        assert (row["days_past_due"], row["unpaid_reminders"], row["in_collection"]) == (
            past_due,
            reminders,
            collection,
        ), day
    assert at(billing, "C9", "2026-03-30")["late_payments_12m"] == 1


def test_a_payment_counts_from_the_day_after_it_was_made() -> None:
    tables = f.tables(
        invoices=[
            f.invoice("C9", "2026-01-10", paid_date="2026-02-20"),  # due 2026-02-09
            f.invoice("C9", "2026-02-20", invoice_id="B"),
            f.invoice("C9", "2026-02-21", invoice_id="C"),
        ]
    )
    billing = billing_features(tables["invoices"])
    assert at(billing, "C9", "2026-02-20")["days_past_due"] == 11
    assert at(billing, "C9", "2026-02-21")["days_past_due"] == 0
    assert at(billing, "C9", "2026-02-21")["late_payments_12m"] == 1


def test_profile_counts_offers_strictly_before_each_snapshot(built: dict) -> None:
    profile = built["customer_profile"]
    assert at(profile, "C1", "2026-03-01")["offers_shown_6m"] == 0
    april = at(profile, "C1", "2026-04-01")  # shown 03-05, clicked 03-06
    assert (april["offers_shown_6m"], april["offers_clicked_6m"]) == (1, 1)
    may = at(profile, "C1", "2026-05-01")  # and shown 04-05, declined 04-07
    assert (may["offers_shown_6m"], may["offers_declined_6m"]) == (2, 1)
    assert at(profile, "C3", "2026-03-01")["offers_accepted_12m"] == 1
    assert (may["age"], may["region"], may["satisfaction"]) == (36, "Stockholm", 2.0)
    assert math.isnan(at(profile, "C3", "2026-03-01")["satisfaction"])


def test_offer_counts_leave_the_window_after_six_months() -> None:
    tables = f.tables(
        customers=[f.customer("C9", signup_date="2025-01-01")],
        offer_events=[f.offer_event("C9", "PLAN_15GB", "2025-02-10T08:00:00Z")],
    )
    profile = profile_features(
        tables["customers"], tables["offer_events"], pd.Timestamp("2025-10-01", tz="UTC")
    )
    assert at(profile, "C9", "2025-08-01")["offers_shown_6m"] == 1
    assert at(profile, "C9", "2025-09-01")["offers_shown_6m"] == 0


def test_consent_changes_hold_from_their_exact_time(built: dict) -> None:
    consent = built["customer_consent"]
    assert stamps(consent, "C1") == [
        "2025-01-15T00:00:00+00:00",
        "2025-01-15T10:00:00+00:00",
        "2026-05-20T12:00:00+00:00",
    ]
    signup = at(consent, "C1", "2025-01-15T00:00:00")
    granted = at(consent, "C1", "2025-01-15T10:00:00")
    objected = at(consent, "C1", "2026-05-20T12:00:00")
    columns = ["consent_marketing", "consent_profiling", "consent_usage_insights"]
    assert signup[columns].tolist() == [0, 0, 0]
    assert granted[columns].tolist() == [1, 1, 0]
    assert objected[columns].tolist() == [0, 1, 0]
    assert (granted["objected_marketing"], objected["objected_marketing"]) == (0, 1)
    assert (objected["birth_year"], objected["segment"]) == (1990, "consumer")


def test_no_consent_row_means_not_granted_and_a_refusal_is_not_an_objection() -> None:
    tables = f.tables(
        customers=[f.customer("C8"), f.customer("C9")],
        consents=[f.consent("C9", "marketing", False, "2025-02-01T00:00:00Z")],
    )
    consent = consent_features(tables["customers"], tables["consents"])
    assert at(consent, "C8", "2025-01-15")[
        ["consent_marketing", "objected_marketing"]
    ].tolist() == [
        0,
        0,
    ]
    assert at(consent, "C9", "2025-02-01")["objected_marketing"] == 0


def test_offer_attributes_keep_unlimited_as_nan() -> None:
    offers = offer_features(f.catalog()).set_index(OFFER_KEY)
    unlimited = offers.loc["PLAN_UNLIMITED"]
    assert pd.isna(unlimited["offer_data_gb"])
    assert unlimited["offer_roaming_data_gb"] == 20.0
    assert unlimited["offer_new_customer_fee_sek"] == 399.0
    assert unlimited["offer_binding_months"] == 24
    assert offers.loc["PLAN_60GB", "offer_new_customer_fee_sek"] == 369.0  # same as existing
    assert offers.loc["ADDON_DATA_10GB", "offer_kind_code"] == 1
    assert offers.loc["PLAN_10GB_LEGACY", EVENT_TIMESTAMP] == pd.Timestamp("2018-01-01", tz="UTC")


def test_empty_input_gives_empty_tables_with_the_right_columns() -> None:
    empty = f.tables()
    usage = usage_features(empty["usage_monthly"])
    assert usage.empty and list(usage.columns)[2:] == list(FEATURE_VIEWS["customer_usage"])
    assert billing_features(empty["invoices"]).empty


def test_calendar_months() -> None:
    days = np.array(["2025-01-15", "2025-01-31", "2025-03-01"], dtype="datetime64[D]")
    later = np.array(["2025-02-14", "2025-02-28", "2025-03-01"], dtype="datetime64[D]")
    assert months_between(days, later).tolist() == [0, 0, 0]
    assert months_until(days, later).tolist() == [1, 1, 0]
    assert months_between(days, later + 1).tolist() == [1, 1, 0]


def test_building_in_customer_slices_gives_the_tables_of_one_pass(
    world: dict[str, pd.DataFrame],
    built: dict[str, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from core.settings import Settings
    from features.pipeline import build_features

    root = tmp_path_factory.mktemp("sliced")
    raw = f.write_tables(world, root / "raw")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=raw,
        catalog=f.CATALOG_PATH,
        features_dir=root / "features",
    )
    paths = build_features(settings=settings, customers_per_slice=1, check=False)
    for view, path in paths.items():
        sliced = pd.read_parquet(path)
        key = OFFER_KEY if view == "offer_attributes" else CUSTOMER_KEY
        order = [key, EVENT_TIMESTAMP]
        expected = built[view].sort_values(order).reset_index(drop=True)
        got = sliced[expected.columns].sort_values(order).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False)


def test_a_build_into_a_new_folder_remembers_the_tables_it_checked(
    world: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The command after the build (materialize, retrain, the invoice run) finds the input tables
    unchanged since they were checked and does not read them all again."""
    from core.catalog import load_catalog
    from core.settings import Settings
    from core.validation import require_valid
    from features.pipeline import build_features

    root = tmp_path_factory.mktemp("remembered")
    raw = f.write_tables(world, root / "raw")
    features = root / "new" / "features"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=raw, catalog=f.CATALOG_PATH, features_dir=features
    )
    build_features(settings=settings)
    report = require_valid(raw, load_catalog(f.CATALOG_PATH), remember_in=features)
    assert report.remembered
    assert report.row_counts["customers"] == len(world["customers"])
