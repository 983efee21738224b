"""Arbitration by the stated objective, the floors, the cut to max_offers, and the rules order."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.settings import Settings
from serving.decision.arbitration import (
    BELOW_ACCEPTANCE_FLOOR,
    BELOW_VALUE_FLOOR,
    DEFAULT_OBJECTIVE,
    LOYALTY_PRICE,
    NO_VALUE,
    PAYMENT_HELP,
    PLAN_FIT_SAVING,
    Objective,
    cut,
    floor_block,
    offer_value,
)
from serving.decision.candidates import Candidate
from serving.decision.engine import decide
from serving.decision.inputs import Account
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    account,
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
# Hand-computed with the defaults (weights 1, 1, 0.5; horizon 12; churn risk 0.5, reduction
# 0.3; 150 kr for an accepted offer): retention is 0.5 × 0.3 × 295 × 12 = 531 kr for offers with
# a customer benefit, which are valued at 0.5 × saving × 12 + 531 + 150; an upgrade with no
# benefit at (1 − 0.5) × extra fee × 12 + 150.
ACCEPTED = 150.0
EXPECTED = {
    "LOYALTY_NEW_PRICE": 0.5 * (0.5 * 30 * 12 + 531 + ACCEPTED),  # 430.5
    "ADDON_DATA_10GB": 0.4 * (0.5 * 37 * 12 + 531 + ACCEPTED),  # 361.2
    "PLAN_15GB": 0.3 * (0.5 * 76 * 12 + 531 + ACCEPTED),  # 341.1
    "PAY_EINVOICE": 0.2 * (0.5 * 29 * 12 + 531 + ACCEPTED),  # 171.0
    "PAY_AUTOGIRO": 0.2 * (0.5 * 29 * 12 + 531 + ACCEPTED),  # 171.0
    "PLAN_30GB": 0.1 * (0.5 * 16 * 12 + 531 + ACCEPTED),  # 77.7
    "PLAN_UNLIMITED": 0.01 * (0.5 * 104 * 12 + ACCEPTED),  # 7.74, below the 2 % floor
    "PLAN_60GB": 0.01 * (0.5 * 74 * 12 + ACCEPTED),  # 5.94, below the 2 % floor
}
# Paid add-ons that raise no allowance the customer nearly used: blocked, never valued.
UNJUSTIFIED = ("ADDON_EU_ROAMING", "ADDON_STREAMING", "ADDON_EXTRA_SIM")


def _decide(
    max_offers: int,
    acceptance: dict[str, float] = ACCEPTANCE,
    objective: Objective = DEFAULT_OBJECTIVE,
    churn_risk: float = 0.5,
    **account_values: float,
) -> tuple[list[str], dict[str, float | None], dict[str, str | None]]:
    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0, **account_values))
    decision = decide(
        request(max_offers=max_offers),
        source,
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, acceptance, churn=churn_risk, default=0.01),
        recently_declined=frozenset(),
        objective=objective,
    )
    values = {r.offer_id: r.expected_value_sek for r in decision.candidates}
    blocks = {r.offer_id: r.blocked_by for r in decision.candidates}
    return [o.offer_id for o in decision.offers], values, blocks


def test_values_match_the_hand_computed_ones() -> None:
    _, values, blocks = _decide(10)
    for offer_id, expected in EXPECTED.items():
        assert values[offer_id] == pytest.approx(expected, abs=0.01), offer_id
    for offer_id in UNJUSTIFIED:
        assert values[offer_id] is None, offer_id  # blocked by a guardrail, never valued
    assert blocks["PLAN_UNLIMITED"] == blocks["PLAN_60GB"] == BELOW_ACCEPTANCE_FLOOR


def test_ranked_by_acceptance_times_value_with_one_plan_at_most() -> None:
    shown, _, _ = _decide(10)
    # The likeliest saving comes first, not the least likely; PLAN_30GB gives way to PLAN_15GB
    # (one plan at most); equal values rank by offer id.
    assert shown == [
        "LOYALTY_NEW_PRICE",
        "ADDON_DATA_10GB",
        "PLAN_15GB",
        "PAY_AUTOGIRO",
        "PAY_EINVOICE",
    ]


@pytest.mark.parametrize(
    ("tolerance", "shown"),
    [
        (0.0, ["LOYALTY_NEW_PRICE", "PLAN_15GB", "ADDON_DATA_10GB"]),
        (0.09, ["LOYALTY_NEW_PRICE", "PLAN_15GB", "ADDON_DATA_10GB"]),
        (0.1, ["LOYALTY_NEW_PRICE", "ADDON_DATA_10GB", "PLAN_15GB"]),
    ],
)
def test_within_the_value_tolerance_the_likelier_offer_goes_first(
    tolerance: float, shown: list[str]
) -> None:
    # PLAN_15GB at 0.35: 0.35 × (0.5 × 76 × 12 + 531 + 150) = 397.95 kr; ADDON_DATA_10GB at 0.4
    # is worth 361.2 kr, 9.2 % less, and likelier: it goes before the plan from a tolerance of
    # 0.1, not at 0.09. LOYALTY_NEW_PRICE (0.5, 430.5 kr) leads either way: it is the likeliest.
    objective = replace(DEFAULT_OBJECTIVE, value_tolerance=tolerance)
    acceptance = {**ACCEPTANCE, "PLAN_15GB": 0.35}
    ranked, values, _ = _decide(3, acceptance, objective)
    assert values["PLAN_15GB"] == pytest.approx(397.95, abs=0.01)
    assert ranked == shown


@pytest.mark.parametrize(("max_offers", "count"), [(0, 0), (1, 1), (3, 3), (10, 5)])
def test_max_offers_cuts_the_ranking(max_offers: int, count: int) -> None:
    shown, _, _ = _decide(max_offers)
    assert len(shown) == count
    full, _, _ = _decide(10)
    assert shown == full[:count]


def _candidate(offer_id: str, saving: float, kind: str = "plan") -> Candidate:
    return Candidate(offer=offer(offer_id, kind), price_sek=100.0, fit=None, saving_sek=saving)


GOOD_STANDING = Account.from_features(account())
IN_TROUBLE = Account.from_features(account(unpaid_reminders=1))


def test_the_objective_formula() -> None:
    # A saving of 20 kr a month: 0.5 × 240 + 0.4 × 0.3 × 300 × 12 + 150 = 120 + 432 + 150; the
    # revenue it gives up is not held against it.
    saving = offer_value(_candidate("PLAN_X", 20.0), GOOD_STANDING, 0.4, 300.0)
    assert saving.benefit_reason == PLAN_FIT_SAVING
    assert (saving.revenue_change_sek, saving.retention_sek, saving.customer_saving_sek) == (
        -240.0,
        432.0,
        240.0,
    )
    assert saving.value_sek == pytest.approx(552.0 + ACCEPTED)
    # An upsell of 50 kr keeps nobody: 1 × 600 − 0.5 × 600 + 150, whatever the churn risk.
    upsell = offer_value(_candidate("ADD_X", -50.0, "addon"), GOOD_STANDING, 0.4, 300.0)
    assert upsell.benefit_reason is None and upsell.retention_sek == 0.0
    assert upsell.value_sek == pytest.approx(300.0 + ACCEPTED)
    # The weights, the horizon and the accepted offer's value come from settings.
    objective = Objective.from_settings(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            weight_revenue=2.0,
            weight_customer=0.0,
            horizon_months=24,
            accepted_offer_value_sek=0.0,
        )
    )
    assert offer_value(
        _candidate("ADD_X", -50.0, "addon"), GOOD_STANDING, 0.4, 300.0, objective
    ).value_sek == pytest.approx(2.0 * 50 * 24)


def test_the_accepted_offer_value_tempers_revenue_against_acceptance() -> None:
    # A 50 kr upsell at 6 % against a 10 kr loyalty saving at 25 % (churn risk 0, so no
    # retention). Money terms alone: 0.06 × 300 = 18 leads 0.25 × 60 = 15. With 150 kr for an
    # accepted offer: 0.06 × 450 = 27 against 0.25 × 210 = 52.5, the likely offer leads.
    upsell, loyalty = _candidate("ADD_X", -50.0, "addon"), _candidate("LOYAL", 10.0, "loyalty")
    without = replace(DEFAULT_OBJECTIVE, accepted_offer_value_sek=0.0)

    def expected(candidate: Candidate, p: float, objective: Objective) -> float:
        return p * offer_value(candidate, GOOD_STANDING, 0.0, 300.0, objective).value_sek

    assert expected(upsell, 0.06, without) == pytest.approx(18.0)
    assert expected(loyalty, 0.25, without) == pytest.approx(15.0)
    assert expected(upsell, 0.06, DEFAULT_OBJECTIVE) == pytest.approx(27.0)
    assert expected(loyalty, 0.25, DEFAULT_OBJECTIVE) == pytest.approx(52.5)
    # It never makes an offer of no positive money value worth showing, however large.
    generous = replace(DEFAULT_OBJECTIVE, accepted_offer_value_sek=10_000.0)
    idle = offer_value(_candidate("HELP", 0.0, "payment_help"), GOOD_STANDING, 0.2, 300.0, generous)
    assert idle.value_sek == 0.0 and floor_block(0.9, idle.value_sek, generous) == NO_VALUE
    # Nor one of tiny money value: the value floor reads the money terms alone. A saving of
    # 0.05 kr a month (churn risk 0): 0.5 × 0.6 = 0.3 kr; at 0.5 acceptance 0.15 kr < 1 kr.
    tiny = offer_value(_candidate("PLAN_X", 0.05), GOOD_STANDING, 0.0, 300.0, generous)
    assert tiny.money_sek == pytest.approx(0.3) and tiny.value_sek == pytest.approx(10_000.3)
    assert floor_block(0.5, tiny.money_sek, generous) == BELOW_VALUE_FLOOR
    # At its edge: 2 kr of money terms at 0.5 acceptance is 1 kr, shown.
    edge = offer_value(_candidate("PLAN_X", 2.0 / 6.0), GOOD_STANDING, 0.0, 300.0, generous)
    assert floor_block(0.5, edge.money_sek, generous) is None


def test_the_engine_leaves_off_an_offer_of_tiny_money_value_whatever_it_would_rank() -> None:
    # The loyalty price's retention at churn risk 0 is nothing and its saving 30 kr a month is
    # worth 180 kr; PLAN_30GB saves 16 kr (96 kr). A value floor of 15 kr of acceptance × money
    # terms: the loyalty price at 0.5 (90 kr) stays, PLAN_30GB at 0.1 (9.6 kr) goes, although
    # with the accepted offer value it scores 0.1 × 246 = 24.6 kr.
    objective = replace(DEFAULT_OBJECTIVE, min_value_sek=15.0)
    shown, values, blocks = _decide(10, ACCEPTANCE, objective, churn_risk=0.0)
    assert blocks["PLAN_30GB"] == BELOW_VALUE_FLOOR
    assert values["PLAN_30GB"] == pytest.approx(0.1 * (96 + ACCEPTED))
    assert blocks["LOYALTY_NEW_PRICE"] is None
    assert "PLAN_30GB" not in shown and "LOYALTY_NEW_PRICE" in shown


def test_offers_that_cost_revenue_need_a_stated_benefit() -> None:
    loyalty = offer_value(_candidate("LOYAL", 0.0, "loyalty"), GOOD_STANDING, 0.2, 300.0)
    assert loyalty.benefit_reason == LOYALTY_PRICE and loyalty.value_sek > 0
    help_in_trouble = offer_value(_candidate("HELP", 0.0, "payment_help"), IN_TROUBLE, 0.2, 300.0)
    assert help_in_trouble.benefit_reason == PAYMENT_HELP and help_in_trouble.value_sek > 0
    # Payment help for a customer in good standing that saves nothing has no benefit to state.
    idle = offer_value(_candidate("HELP", 0.0, "payment_help"), GOOD_STANDING, 0.2, 300.0)
    assert idle.benefit_reason is None and idle.value_sek == 0.0
    assert floor_block(0.9, idle.value_sek, DEFAULT_OBJECTIVE) == NO_VALUE


def test_floors_at_their_edges() -> None:
    objective = replace(DEFAULT_OBJECTIVE, min_acceptance=0.02, min_value_sek=5.0)
    assert floor_block(0.02, 1000.0, objective) is None
    assert floor_block(0.0199, 1000.0, objective) == BELOW_ACCEPTANCE_FLOOR
    assert floor_block(0.05, 100.0, objective) is None  # 5.0 exactly
    assert floor_block(0.05, 99.0, objective) == BELOW_VALUE_FLOOR
    assert floor_block(0.5, 0.0, objective) == NO_VALUE
    assert floor_block(0.5, -10.0, objective) == NO_VALUE


def test_nothing_worth_showing_leaves_the_invoice_without_offers() -> None:
    unlikely = dict.fromkeys(ACCEPTANCE, 0.005)
    shown, values, blocks = _decide(3, unlikely)
    assert shown == []
    assert values["PLAN_15GB"] is not None
    assert blocks["PLAN_15GB"] == BELOW_ACCEPTANCE_FLOOR


def test_an_unlikely_upsell_does_not_fill_the_invoice() -> None:
    # 3.2 GB of 5 GB used in every month, no overage: more data is not worth an invoice line at
    # 0.8 % acceptance, whatever it would earn.
    light = {
        "data_gb_m1": 4.0,
        "data_gb_m2": 3.2,
        "data_gb_m3": 3.2,
        "data_gb_avg_3m": 3.2,
        "data_gb_max_3m": 4.0,  # exactly 80 % of 5 GB: the upgrade is justified by usage
        "overage_sek_m1": 0.0,
        "overage_sek_m2": 0.0,
        "overage_sek_m3": 0.0,
        "overage_sek_avg_3m": 0.0,
    }
    shown, _, blocks = _decide(3, {"ADDON_DATA_10GB": 0.008}, **light)
    assert "ADDON_DATA_10GB" not in shown
    assert blocks["ADDON_DATA_10GB"] == BELOW_ACCEPTANCE_FLOOR
    shown, _, blocks = _decide(3, {"ADDON_DATA_10GB": 0.3}, **light)
    assert shown[0] == "ADDON_DATA_10GB"


@pytest.mark.parametrize(
    ("max_used_gb", "share", "justified"),
    [(4.0, 0.8, True), (3.99, 0.8, False), (4.0, 0.81, False), (4.5, 0.9, True)],
)
def test_the_upgrade_threshold_at_its_edge(
    max_used_gb: float, share: float, justified: bool
) -> None:
    # The newest month is the busiest; no month goes over the 5 GB, so no overage to remove.
    usage = {
        "data_gb_m1": max_used_gb,
        "data_gb_m2": 3.2,
        "data_gb_m3": 3.2,
        "data_gb_max_3m": max_used_gb,
        "overage_sek_m1": 0.0,
        "overage_sek_m2": 0.0,
        "overage_sek_m3": 0.0,
        "overage_sek_avg_3m": 0.0,
    }
    objective = replace(DEFAULT_OBJECTIVE, upgrade_usage_share=share)
    _, _, blocks = _decide(3, {"ADDON_DATA_10GB": 0.3}, objective, **usage)
    assert (blocks["ADDON_DATA_10GB"] != "upgrade_not_justified") is justified


# Offers whose attributes differ, so the fake scorer can give each its own acceptance.
VARIED = ("PLAN_15GB", "PLAN_30GB", "PLAN_60GB", "ADDON_DATA_10GB", "LOYALTY_NEW_PRICE")
PROBABILITIES = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    acceptance=st.tuples(*(PROBABILITIES for _ in VARIED)),
    which=st.sampled_from(VARIED),
    raise_by=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    weights=st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 3.0), st.floats(0.0, 3.0)),
    accepted_offer_value=st.floats(0.0, 1_000.0),
    value_tolerance=st.one_of(st.just(DEFAULT_OBJECTIVE.value_tolerance), st.floats(0.0, 0.95)),
)
def test_raising_acceptance_never_lowers_a_rank(
    acceptance: tuple[float, ...],
    which: str,
    raise_by: float,
    weights: tuple[float, float, float],
    accepted_offer_value: float,
    value_tolerance: float,
) -> None:
    """Through the whole engine: guardrails, objective, floors, the tolerance and the cut."""
    objective = replace(
        DEFAULT_OBJECTIVE,
        weight_revenue=weights[0],
        weight_retention=weights[1],
        weight_customer=weights[2],
        accepted_offer_value_sek=accepted_offer_value,
        value_tolerance=value_tolerance,
    )
    before = dict(zip(VARIED, acceptance, strict=True))
    after = {**before, which: min(1.0, before[which] + raise_by)}
    shown_before, _, _ = _decide(10, before, objective)
    shown_after, _, _ = _decide(10, after, objective)
    if which in shown_before:
        assert which in shown_after
        assert shown_after.index(which) <= shown_before.index(which)


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
