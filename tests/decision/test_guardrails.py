"""Guardrails no score overrides: loyalty fairness and customer benefit."""

from __future__ import annotations

from typing import Any

import pytest

from serving.decision.engine import Decision, decide
from serving.decision.guardrails import (
    above_new_customer_price,
    customer_benefit,
    fair_price,
    is_upgrade,
)
from serving.decision.inputs import Account
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    account,
    consent,
    heavy_user,
    make_catalog,
    offer,
    request,
)

CATALOG = make_catalog()
OFFERS = CATALOG.by_id()
PAID_ADDONS = ("ADDON_DATA_10GB", "ADDON_EU_ROAMING", "ADDON_STREAMING", "ADDON_EXTRA_SIM")
UPGRADES = ("PLAN_30GB", "PLAN_60GB", "PLAN_UNLIMITED", *PAID_ADDONS)


def _model_decision(
    account_row: dict[str, Any],
    acceptance: dict[str, float],
    policy: str = "model",
    default: float = 0.01,
    **kw: Any,
) -> Decision:
    source = FakeFeatureSource(consent_row=consent(**kw), account_row=account_row)
    return decide(
        request(max_offers=10),
        source,
        CATALOG,
        policy=policy,
        scorer=FakeScorer(CATALOG, acceptance, default=default),
        recently_declined=frozenset(),
    )


def test_an_unjustified_upgrade_is_never_shown_whatever_its_score() -> None:
    # About 8 GB a month of 15 GB, no overage: nothing calls for more.
    decision = _model_decision(account(), dict.fromkeys(UPGRADES, 0.99))
    shown = {o.offer_id for o in decision.offers}
    assert not shown & set(UPGRADES)
    blocked = {r.offer_id: r for r in decision.candidates}
    for offer_id in UPGRADES:
        assert blocked[offer_id].blocked_by == "upgrade_not_justified"
        assert blocked[offer_id].acceptance_probability == 0.99  # scored, logged, still blocked


@pytest.mark.parametrize("policy", ["model", "rules"])
def test_a_paid_addon_is_never_shown_to_a_customer_well_within_the_allowance(policy: str) -> None:
    # A scorer that likes everything: only the guardrails stand between the customer and an
    # add-on they do not need (about 8 GB of 15 GB, no roaming, no overage).
    decision = _model_decision(account(), {}, policy=policy, default=1.0)
    shown = {o.offer_id for o in decision.offers}
    assert decision.offers and not shown & set(PAID_ADDONS)
    blocked = {r.offer_id: r.blocked_by for r in decision.candidates}
    assert all(blocked[offer_id] == "upgrade_not_justified" for offer_id in PAID_ADDONS)


def test_overage_justifies_only_the_addon_that_removes_it() -> None:
    # Data overage is paid, but a streaming bundle or an extra SIM does nothing about it.
    decision = _model_decision(heavy_user(), {}, default=1.0)
    blocked = {r.offer_id: r.blocked_by for r in decision.candidates}
    assert blocked["ADDON_DATA_10GB"] is None
    for offer_id in ("ADDON_STREAMING", "ADDON_EXTRA_SIM", "ADDON_EU_ROAMING"):
        assert blocked[offer_id] == "upgrade_not_justified", offer_id


def test_the_same_upgrade_is_shown_when_usage_justifies_it() -> None:
    decision = _model_decision(heavy_user(), {"PLAN_UNLIMITED": 0.99})
    assert decision.offers[0].offer_id == "PLAN_UNLIMITED"
    codes = [reason.code for reason in decision.offers[0].reasons]
    # Unlimited costs more than the 5 GB plan and its overage: the overage paid is no argument.
    assert decision.offers[0].customer_saving_sek_per_month < 0
    assert "usage_above_allowance" in codes and "overage_paid" not in codes


def test_an_allowance_nearly_used_justifies_more_of_it() -> None:
    # 12.5 GB of 15 GB in a recent month is over 80 %, without any overage yet.
    nearly = account(data_gb_m1=12.5, data_gb_max_3m=12.5, data_gb_avg_3m=11.0)
    decision = _model_decision(nearly, {"PLAN_30GB": 0.9, "ADDON_DATA_10GB": 0.3})
    assert decision.offers[0].offer_id == "PLAN_30GB"
    blocked = {r.offer_id: r.blocked_by for r in decision.candidates}
    assert blocked["ADDON_DATA_10GB"] is None
    assert blocked["ADDON_EU_ROAMING"] == "upgrade_not_justified"  # no roaming used


def test_a_plan_is_offered_at_the_new_customer_price() -> None:
    """The rule chosen: shown at the new-customer price, never blocked for it."""
    decision = _model_decision(heavy_user(), {}, policy="rules")
    plan = next(o for o in decision.offers if o.offer_id == "PLAN_15GB")
    assert OFFERS["PLAN_15GB"].monthly_fee_sek == 249.0
    assert plan.monthly_fee_sek == 219.0
    # Saving at 219 kr: 179 kr + 116 kr overage today against 219 kr with no overage.
    assert plan.customer_saving_sek_per_month == pytest.approx(76.0)
    # Said in words where there is room among the reasons (at most three before terms).
    modest = _model_decision(account(), {}, policy="rules")
    cheaper = next(o for o in modest.offers if o.offer_id == "PLAN_5GB")
    assert cheaper.monthly_fee_sek == 149.0
    assert [(r.code, r.text) for r in cheaper.reasons] == [
        (
            "plan_fit_saving",
            "Med Mobil 5 GB hade du betalat 13 kr mindre per månad de senaste tre månaderna.",
        ),
        ("new_customer_price", "Samma pris som för nya kunder: 149 kr per månad."),
    ]
    # An add-on with a new-customer price too.
    streaming = next(r for r in decision.candidates if r.offer_id == "ADDON_STREAMING")
    assert streaming.price_sek == 99.0


def test_loyalty_fairness_predicate() -> None:
    customer = Account.from_features(account())
    plan = OFFERS["PLAN_15GB"]
    assert fair_price(plan) == 219.0
    assert above_new_customer_price(plan, customer, 249.0) == "above_new_customer_price"
    assert above_new_customer_price(plan, customer, 219.0) is None
    loyalty = OFFERS["LOYALTY_NEW_PRICE"]
    # Loyalty is measured against the new-customer price of the customer's own plan.
    assert above_new_customer_price(loyalty, customer, 219.0) is None
    assert above_new_customer_price(loyalty, customer, 229.0) == "above_new_customer_price"


def test_a_cheaper_plan_that_would_cost_more_for_the_usage_is_not_shown() -> None:
    decision = _model_decision(account(), {"PLAN_1GB": 0.99})
    blocked = {r.offer_id: r for r in decision.candidates}
    assert blocked["PLAN_1GB"].blocked_by == "costs_more_for_usage"
    assert blocked["PLAN_1GB"].customer_saving_sek_per_month is not None
    assert blocked["PLAN_1GB"].customer_saving_sek_per_month < 0


def test_customer_benefit_predicate() -> None:
    customer = Account.from_features(account())
    upgrade = OFFERS["PLAN_30GB"]
    assert is_upgrade(upgrade, customer)
    assert not is_upgrade(OFFERS["PLAN_5GB"], customer)
    # Every add-on the customer would pay for is an upgrade, whatever allowance it adds.
    for offer_id in PAID_ADDONS:
        assert is_upgrade(OFFERS[offer_id], customer), offer_id
    assert not is_upgrade(offer("ADDON_FREE", "addon", monthly_fee_sek=0.0), customer)
    assert not is_upgrade(OFFERS["LOYALTY_NEW_PRICE"], customer)
    assert not is_upgrade(OFFERS["PAY_AUTOGIRO"], customer)
    benefit = {"offer_overage_sek": 0.0, "saving_sek": -30.0}
    assert customer_benefit(upgrade, customer, current_overage_sek=0.0, **benefit) == (
        "upgrade_not_justified"
    )
    # Overage the offer removes justifies it.
    assert customer_benefit(upgrade, customer, current_overage_sek=40.0, **benefit) is None
    # Without plan fit (no profiling) no upgrade can be justified, a paid add-on included.
    for unprofiled in (upgrade, OFFERS["ADDON_STREAMING"]):
        assert (
            customer_benefit(
                unprofiled,
                customer,
                offer_overage_sek=None,
                current_overage_sek=None,
                saving_sek=None,
            )
            == "upgrade_without_profiling"
        )


def test_non_personalised_never_shows_an_upgrade() -> None:
    # The business featured plan (Mobil 30 GB) is an upgrade for a Mobil 15 GB customer.
    decision = _model_decision(heavy_user(), {}, profiling=False, segment="business")
    assert decision.policy == "non_personalised"
    blocked = {r.offer_id: r.blocked_by for r in decision.candidates}
    assert blocked["PLAN_30GB"] == "upgrade_without_profiling"
    # ... but not for someone paying more today.
    on_60 = account(
        current_plan_id="PLAN_60GB",
        current_monthly_fee_sek=369.0,
        current_new_customer_fee_sek=float("nan"),
    )
    decision = _model_decision(on_60, {}, profiling=False, segment="business")
    assert [o.offer_id for o in decision.offers] == ["PLAN_30GB"]
    assert decision.offers[0].monthly_fee_sek == 279.0


def test_an_evaluation_may_lift_a_guardrail_to_measure_it_and_nothing_else() -> None:
    # About 8 GB of 15 GB, no overage: no upgrade is justified, unless the guardrail is lifted.
    blocked = _model_decision(account(), dict.fromkeys(UPGRADES, 0.5))
    assert not {o.offer_id for o in blocked.offers} & set(UPGRADES)
    lifted = decide(
        request(max_offers=10),
        FakeFeatureSource(consent_row=consent(), account_row=account()),
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, dict.fromkeys(UPGRADES, 0.5), default=0.01),
        recently_declined=frozenset(),
        lifted=frozenset({"upgrade_not_justified"}),
    )
    assert {o.offer_id for o in lifted.offers} & set(UPGRADES)
    with pytest.raises(ValueError, match=r"cannot be lifted.*consent"):
        decide(
            request(),
            FakeFeatureSource(consent_row=consent(), account_row=account()),
            CATALOG,
            policy="model",
            scorer=None,
            recently_declined=frozenset(),
            lifted=frozenset({"consent"}),
        )
