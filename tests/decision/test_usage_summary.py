"""The usage summary for a hand-made account: values, explanations, detail by consent."""

from __future__ import annotations

import math
from typing import Any

import pytest

from core.plan_fit import TARIFF, monthly_overage_sek, overage_sek
from serving.decision.engine import decide, summarise_usage
from serving.decision.inputs import Account, Locale, UnknownCustomerError
from serving.decision.usage_summary import DetailLevel, build_usage_summary
from tests.factories.decision import (
    INVOICE_DATE,
    FakeFeatureSource,
    UnknownSource,
    account,
    consent,
    make_catalog,
    request,
)

CATALOG = make_catalog()

# Mobil 1 GB (99 kr: 1 GB, 300 minutes, 1 GB roaming), three months alike: 4.1 GB, 342 minutes,
# 2.5 GB abroad. Last invoice: 29 kr invoice fee and a 60 kr reminder fee. Bound until March.
SMALL_PLAN = account(
    current_plan_id="PLAN_1GB",
    current_monthly_fee_sek=99.0,
    current_new_customer_fee_sek=math.nan,
    current_data_gb=1.0,
    current_voice_minutes=300.0,
    current_roaming_data_gb=1.0,
    binding_end_date="2027-03-31",
    invoice_fee_last_sek=29.0,
    reminder_fee_last_sek=60.0,
    sms_m1=57,
    **{f"data_gb_m{m}": 4.1 for m in range(1, 4)},
    **{f"voice_minutes_m{m}": 342.0 for m in range(1, 4)},
    **{f"roaming_data_gb_m{m}": 2.5 for m in range(1, 4)},
    **{f"overage_sek_m{m}": 173.18 for m in range(1, 4)},
)


def _summary(
    locale: Locale = "sv", detail: DetailLevel = "basic", features: dict[str, Any] = SMALL_PLAN
) -> dict[str, Any]:
    return dict(
        build_usage_summary(
            Account.from_features(features),
            CATALOG,
            locale=locale,
            detail_level=detail,
            segment="consumer",
            invoice_date=INVOICE_DATE,
        )
    )


def test_basic_summary_values() -> None:
    summary = _summary()
    assert summary["period"] == {"start": "2026-10-01", "end": "2026-10-31"}
    assert summary["plan"] == {
        "plan_id": "PLAN_1GB",
        "title": "Mobil 1 GB",
        "monthly_fee_sek": 99.0,
    }
    assert summary["binding_end_date"] == "2027-03-31"
    assert summary["usage"] == [
        {"measure": "data", "used": 4.1, "included": 1.0, "unit": "GB"},
        {"measure": "voice", "used": 342.0, "included": 300.0, "unit": "min"},
        {"measure": "sms", "used": 57.0, "included": None, "unit": "sms"},
        {"measure": "roaming", "used": 2.5, "included": 1.0, "unit": "GB"},
    ]
    assert summary["detail_level"] == "basic"
    assert summary["trends"] is None and summary["plan_fit"] is None


def test_extra_charges_are_explained_with_plan_fit_amounts() -> None:
    charges = {c["kind"]: c for c in _summary()["extra_charges"]}
    assert list(charges) == [
        "data_overage",
        "voice_overage",
        "roaming_overage",
        "invoice_fee",
        "reminder_fee",
    ]
    # The amounts are core.plan_fit's, to the öre.
    assert charges["data_overage"]["amount_sek"] == float(overage_sek(4.1, 1.0, 29.0)) == 89.9
    assert charges["voice_overage"]["amount_sek"] == float(overage_sek(342.0, 300.0, 0.59)) == 24.78
    assert charges["roaming_overage"]["amount_sek"] == float(overage_sek(2.5, 1.0, 39.0)) == 58.5
    month = float(monthly_overage_sek(4.1, 342.0, 2.5, 1.0, 300.0, 1.0, TARIFF))
    overage = sum(
        charges[k]["amount_sek"] for k in ("data_overage", "voice_overage", "roaming_overage")
    )
    assert overage == pytest.approx(month)
    assert charges["invoice_fee"]["amount_sek"] == 29.0
    assert charges["reminder_fee"]["amount_sek"] == 60.0
    assert _summary()["extra_charges_total_sek"] == pytest.approx(89.9 + 24.78 + 58.5 + 29 + 60)

    assert charges["data_overage"]["explanation"] == (
        "Du använde 3,1 GB mer än de 1 GB som ingår, 29 kr per GB."
    )
    assert charges["voice_overage"]["explanation"] == (
        "Du ringde 42 minuter mer än de 300 minuter som ingår, 0,59 kr per minut."
    )
    assert charges["roaming_overage"]["explanation"] == (
        "Du surfade 1,5 GB mer i utlandet än de 1 GB som ingår, 39 kr per GB."
    )
    assert charges["reminder_fee"]["explanation"] == (
        "Påminnelseavgift för en faktura som inte betalades i tid."
    )
    english = {c["kind"]: c["explanation"] for c in _summary("en")["extra_charges"]}
    assert (
        english["data_overage"] == "You used 3.1 GB more than the 1 GB included, at SEK 29 per GB."
    )
    assert english["voice_overage"] == (
        "You called 42 minutes more than the 300 minutes included, at SEK 0.59 a minute."
    )


def test_no_overage_no_charge_and_unlimited_is_null() -> None:
    summary = build_usage_summary(
        Account.from_features(account(reminder_fee_last_sek=0)),
        CATALOG,
        locale="sv",
        detail_level="basic",
        segment="consumer",
        invoice_date=INVOICE_DATE,
    )
    assert summary["extra_charges"] == []
    assert summary["extra_charges_total_sek"] == 0.0
    voice = next(line for line in summary["usage"] if line["measure"] == "voice")
    assert voice["included"] is None  # unlimited


def test_the_newest_months_trend_reads_as_its_usage_line() -> None:
    features = {**SMALL_PLAN, "voice_minutes_m1": 25.6, "voice_minutes_m2": 310.4}
    summary = _summary("en", "detailed", features)
    line = next(line for line in summary["usage"] if line["measure"] == "voice")
    trend = next(t for t in summary["trends"] or [] if t["measure"] == "voice")
    assert line["used"] == trend["months"][-1]["used"] == 26.0  # whole minutes, both
    assert trend["months"][-2]["used"] == 310.0


def test_detailed_summary_adds_trends_and_plan_fit_insight() -> None:
    summary = _summary(detail="detailed")
    assert summary["detail_level"] == "detailed"
    data = next(t for t in summary["trends"] if t["measure"] == "data")
    assert [p["month"] for p in data["months"]] == [
        "2026-05-01",
        "2026-06-01",
        "2026-07-01",
        "2026-08-01",
        "2026-09-01",
        "2026-10-01",
    ]
    # m6 … m1, oldest first: the factory's months 4–6, then 4.1 GB for the last three.
    assert [p["used"] for p in data["months"]] == [9.0, 7.0, 8.0, 4.1, 4.1, 4.1]
    overage = next(t for t in summary["trends"] if t["measure"] == "overage")
    assert overage["unit"] == "SEK" and overage["months"][-1]["used"] == 173.18
    # Today 99 + 89.90 + 24.78 + 58.50 = 272.18 kr a month; Mobil 5 GB at the new-customer price
    # of 149 kr covers all of it: 123.18 kr less.
    assert summary["plan_fit"] == {
        "plan_id": "PLAN_5GB",
        "title": "Mobil 5 GB",
        "monthly_fee_sek": 149.0,
        "cost_sek_per_month": 149.0,
        "current_cost_sek_per_month": 272.18,
        "saving_sek_per_month": 123.18,
        "months": 3,
        "explanation": "Med Mobil 5 GB hade du betalat 123 kr mindre per månad de senaste tre månaderna.",  # noqa: E501
    }


def test_insight_says_so_when_the_current_plan_is_the_cheapest() -> None:
    frugal = account(
        current_plan_id="PLAN_1GB",
        current_monthly_fee_sek=99.0,
        current_data_gb=1.0,
        current_voice_minutes=300.0,
        current_roaming_data_gb=1.0,
        **{f"data_gb_m{m}": 0.5 for m in range(1, 4)},
        **{f"voice_minutes_m{m}": 100.0 for m in range(1, 4)},
    )
    summary = build_usage_summary(
        Account.from_features(frugal),
        CATALOG,
        locale="en",
        detail_level="detailed",
        segment="consumer",
        invoice_date=INVOICE_DATE,
    )
    insight = summary["plan_fit"]
    assert insight is not None
    assert (insight["plan_id"], insight["saving_sek_per_month"]) == ("PLAN_1GB", 0.0)
    assert insight["explanation"] == "Your current plan is the cheapest for your usage."


@pytest.mark.parametrize("usage_insights", [False, True])
def test_summary_alone_needs_no_marketing_consent(usage_insights: bool) -> None:
    source = FakeFeatureSource(
        consent_row=consent(marketing=False, profiling=False, usage_insights=usage_insights),
        account_row=SMALL_PLAN,
    )
    summary = summarise_usage("C0001", source, CATALOG, invoice_date=INVOICE_DATE, locale="sv")
    assert summary["detail_level"] == ("detailed" if usage_insights else "basic")
    assert source.calls == ["consent", "account"]
    assert summary["extra_charges"][0]["amount_sek"] == 89.9


def test_summary_in_a_decision_equals_the_summary_alone() -> None:
    source = FakeFeatureSource(account_row=SMALL_PLAN)
    decision = decide(
        request(), source, CATALOG, policy="rules", scorer=None, recently_declined=frozenset()
    )
    alone = summarise_usage("C0001", source, CATALOG, invoice_date=INVOICE_DATE, locale="sv")
    assert decision.usage_summary == alone


def test_unknown_customer() -> None:
    with pytest.raises(UnknownCustomerError):
        summarise_usage("NOPE", UnknownSource(), CATALOG, invoice_date=INVOICE_DATE, locale="sv")


def test_after_a_plan_change_the_period_is_read_against_the_plan_that_billed_it() -> None:
    """October was billed on Mobil 1 GB; since 1 November the customer is on Mobil 15 GB. The
    invoice of 20 November bills October's overage, so its summary reads October's usage against
    Mobil 1 GB and explains the same overage the invoice charges, not none (Mobil 15 GB would
    have included October's 4.1 GB)."""
    changed = {
        **SMALL_PLAN,
        **{k: v for k, v in account().items() if k.startswith("current_")},
        "plan_id_m1": "PLAN_1GB",
        "plan_id_m2": "PLAN_1GB",
    }
    summary = _summary("en", features=changed)
    assert summary["plan"] == {
        "plan_id": "PLAN_15GB",
        "title": "Mobile 15 GB",
        "monthly_fee_sek": 249.0,
    }
    assert summary["period_plan"] == {"plan_id": "PLAN_1GB", "title": "Mobile 1 GB"}
    assert [(line["measure"], line["included"]) for line in summary["usage"]] == [
        ("data", 1.0),
        ("voice", 300.0),
        ("sms", None),
        ("roaming", 1.0),
    ]
    overage = [c for c in summary["extra_charges"] if c["kind"].endswith("_overage")]
    assert [c["amount_sek"] for c in overage] == [89.9, 24.78, 58.5]
    assert sum(c["amount_sek"] for c in overage) == pytest.approx(changed["overage_sek_m1"])
    assert overage[0]["explanation"] == (
        "You used 3.1 GB more than the 1 GB included, at SEK 29 per GB."
    )
    # Billed on today's plan (no change, or a plan the catalog does not hold): period_plan null.
    for billed_on in ("PLAN_15GB", "PLAN_UNKNOWN", ""):
        same = _summary("en", features={**changed, "plan_id_m1": billed_on})
        assert same["period_plan"] is None
        assert same["usage"][0]["included"] == 15.0
        assert not [c for c in same["extra_charges"] if c["kind"] == "data_overage"]
