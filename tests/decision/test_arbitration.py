"""Arbitration on expected value, the cut to max_offers, and the rules policy's order."""

from __future__ import annotations

import pytest

from serving.decision.arbitration import CHURN_REDUCTION, HORIZON_MONTHS, cut, expected_value
from serving.decision.candidates import Candidate
from serving.decision.engine import decide
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    heavy_user,
    make_catalog,
    offer,
    request,
)

CATALOG = make_catalog()
# The heavy user: Mobil 5 GB at 179 kr + 116 kr overage a month (295 kr); a 29 kr invoice fee.
ACCEPTANCE = {
    "PLAN_15GB": 0.30,  # saves 76 kr
    "PLAN_30GB": 0.10,  # saves 16 kr
    "ADDON_DATA_10GB": 0.40,  # saves 37 kr
    "LOYALTY_NEW_PRICE": 0.50,  # saves 30 kr
    "PAY_EINVOICE": 0.20,  # saves the 29 kr fee
    "PAY_AUTOGIRO": 0.20,  # the same attributes as PAY_EINVOICE, so the same score
    "PAY_INSTALMENT": 0.20,
}
# Hand-computed, horizon 12, churn risk 0.5, reduction 0.3: retention per unit of p is
# 0.5 × 0.3 × 295 × 12 = 531 kr for offers that leave the customer better off.
EXPECTED = {
    "LOYALTY_NEW_PRICE": 0.5 * (-30 * 12 + 531),  # 85.5
    "PAY_EINVOICE": 0.2 * (-29 * 12 + 531),  # 36.6
    "PAY_AUTOGIRO": 0.2 * (-29 * 12 + 531),  # 36.6
    "ADDON_DATA_10GB": 0.4 * (-37 * 12 + 531),  # 34.8
    "PLAN_30GB": 0.1 * (-16 * 12 + 531),  # 33.9
    "PLAN_UNLIMITED": 0.01 * 104 * 12,  # 12.48, an upgrade: no retention value
    "PLAN_60GB": 0.01 * 74 * 12,  # 8.88
    "PLAN_15GB": 0.3 * (-76 * 12 + 531),  # -114.3
}
# Paid add-ons that raise no allowance the customer nearly used: blocked, never valued.
UNJUSTIFIED = ("ADDON_EU_ROAMING", "ADDON_STREAMING", "ADDON_EXTRA_SIM")


def _decide(max_offers: int) -> tuple[list[str], dict[str, float | None]]:
    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
    decision = decide(
        request(max_offers=max_offers),
        source,
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, ACCEPTANCE, churn=0.5, default=0.01),
        recently_declined=frozenset(),
    )
    values = {r.offer_id: r.expected_value_sek for r in decision.candidates}
    return [o.offer_id for o in decision.offers], values


def test_expected_values_match_the_hand_computed_ones() -> None:
    assert (HORIZON_MONTHS, CHURN_REDUCTION) == (12, 0.3)
    _, values = _decide(10)
    for offer_id, expected in EXPECTED.items():
        assert values[offer_id] == pytest.approx(expected, abs=0.01), offer_id
    for offer_id in UNJUSTIFIED:
        assert values[offer_id] is None, offer_id  # blocked by a guardrail, never valued


def test_ranked_by_expected_value_with_one_plan_at_most() -> None:
    shown, _ = _decide(10)
    # PLAN_UNLIMITED, PLAN_60GB and PLAN_15GB lose their place to the better-valued PLAN_30GB.
    # Equal values rank by offer id.
    assert shown == [
        "LOYALTY_NEW_PRICE",
        "PAY_AUTOGIRO",
        "PAY_EINVOICE",
        "ADDON_DATA_10GB",
        "PLAN_30GB",
    ]


@pytest.mark.parametrize(("max_offers", "count"), [(0, 0), (1, 1), (3, 3), (10, 5)])
def test_max_offers_cuts_the_ranking(max_offers: int, count: int) -> None:
    shown, _ = _decide(max_offers)
    assert len(shown) == count
    full, _ = _decide(10)
    assert shown == full[:count]


def test_expected_value_formula() -> None:
    saving = Candidate(offer=offer("PLAN_X"), price_sek=100.0, fit=None, saving_sek=20.0)
    upsell = Candidate(offer=offer("ADD_X", "addon"), price_sek=50.0, fit=None, saving_sek=-50.0)
    # 0.25 × (−20 × 12) + 0.25 × 0.4 × 0.3 × 300 × 12 = −60 + 108
    assert expected_value(saving, 0.25, 0.4, 300.0) == pytest.approx(48.0)
    # An upsell keeps nobody: 0.25 × 50 × 12, whatever the churn risk.
    assert expected_value(upsell, 0.25, 0.4, 300.0) == pytest.approx(150.0)
    assert expected_value(upsell, 0.0, 0.4, 300.0) == 0.0


def test_cut_keeps_one_plan_and_stops_at_max() -> None:
    ranked = ["plan", "addon", "plan", "loyalty", "payment_help"]
    assert cut(ranked, 10, str) == ["plan", "addon", "loyalty", "payment_help"]
    assert cut(ranked, 2, str) == ["plan", "addon"]
    assert cut(ranked, 0, str) == []


def test_rules_policy_puts_the_best_plan_fit_first() -> None:
    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
    decision = decide(
        request(max_offers=10),
        source,
        CATALOG,
        policy="rules",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert decision.policy == "rules"
    # Savings 76, 37, 30, 29, 29 kr (ties by offer id); plain upsells are left to the model.
    assert [o.offer_id for o in decision.offers] == [
        "PLAN_15GB",
        "ADDON_DATA_10GB",
        "LOYALTY_NEW_PRICE",
        "PAY_AUTOGIRO",
        "PAY_EINVOICE",
    ]
    assert [o.customer_saving_sek_per_month for o in decision.offers] == [
        76.0,
        37.0,
        30.0,
        29.0,
        29.0,
    ]
    assert all(
        o.acceptance_probability is None and o.expected_value_sek is None for o in decision.offers
    )
    assert [o["propensity"] for o in decision.to_log_dict()["offers"]] == [1.0] * 5


def test_rules_policy_offers_a_justified_upgrade_when_nothing_saves() -> None:
    # 14 GB of 15 GB used, no overage: no plan saves money, a bigger one is justified.
    busy = heavy_user(
        current_plan_id="PLAN_15GB",
        current_monthly_fee_sek=219.0,
        current_new_customer_fee_sek=219.0,
        current_data_gb=15.0,
        current_roaming_data_gb=6.0,
        data_gb_m1=14.0,
        data_gb_m2=13.5,
        data_gb_m3=14.0,
        data_gb_avg_3m=13.8,
        data_gb_max_3m=14.0,
    )
    decision = decide(
        request(max_offers=3),
        FakeFeatureSource(account_row=busy),
        CATALOG,
        policy="rules",
        scorer=None,
        recently_declined=frozenset(),
    )
    # The smaller extra cost first: the plan (279 − 219 = 60 kr more), then the add-on (79 kr).
    assert [o.offer_id for o in decision.offers] == ["PLAN_30GB", "ADDON_DATA_10GB"]


def test_instalments_come_first_for_a_customer_in_collection() -> None:
    source = FakeFeatureSource(account_row=heavy_user(in_collection=1, invoice_fee_last_sek=29.0))
    decision = decide(
        request(), source, CATALOG, policy="rules", scorer=None, recently_declined=frozenset()
    )
    assert [o.offer_id for o in decision.offers] == [
        "PAY_INSTALMENT",
        "PAY_AUTOGIRO",
        "PAY_EINVOICE",
    ]
    assert [r.code for r in decision.offers[0].reasons] == ["payment_support"]
