"""Candidates and eligibility: dates, segments, tenure, binding, payment trouble, decline cap."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

from core.catalog import Catalog
from features.views import OFFER_ATTRIBUTES
from serving.decision.candidates import (
    PlanFitTable,
    _fit_inputs,
    eligibility,
    fee_change,
    offer_attributes,
    offer_matrix,
    plan_fit_matrix,
    shown_price,
)
from serving.decision.engine import LIFTABLE, Decision, decide
from serving.decision.inputs import Account
from tests.factories.decision import (
    INVOICE_DATE,
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


def _decide(
    account_row: dict[str, Any],
    *,
    policy: str = "rules",
    catalog: Catalog = CATALOG,
    declined: frozenset[str] = frozenset(),
    max_offers: int = 10,
    **consent_values: Any,
) -> Decision:
    source = FakeFeatureSource(consent_row=consent(**consent_values), account_row=account_row)
    scorer = FakeScorer(catalog, {}, default=0.5)
    return decide(
        request(max_offers=max_offers),
        source,
        catalog,
        policy=policy,
        scorer=scorer,
        recently_declined=declined,
    )


def _blocked(decision: Decision) -> dict[str, str | None]:
    return {record.offer_id: record.blocked_by for record in decision.candidates}


def _shown(decision: Decision) -> list[str]:
    return [o.offer_id for o in decision.offers]


@pytest.mark.parametrize("policy", ["model", "rules"])
@pytest.mark.parametrize(
    "trouble", [{"in_collection": 1}, {"unpaid_reminders": 2}], ids=["collection", "reminders"]
)
def test_payment_trouble_gets_only_payment_help(policy: str, trouble: dict[str, int]) -> None:
    decision = _decide(heavy_user(invoice_fee_last_sek=29.0, **trouble), policy=policy)
    assert decision.offers
    assert {o.kind for o in decision.offers} == {"payment_help"}
    assert set(_shown(decision)) == {"PAY_INSTALMENT", "PAY_EINVOICE", "PAY_AUTOGIRO"}
    blocked = _blocked(decision)
    assert blocked["PLAN_15GB"] == "payment_help_only"
    assert blocked["LOYALTY_NEW_PRICE"] == "payment_help_only"


def test_fee_help_only_for_customers_who_paid_an_invoice_fee() -> None:
    in_trouble = _decide(heavy_user(in_collection=1, invoice_fee_last_sek=0.0))
    assert _shown(in_trouble) == ["PAY_INSTALMENT"]
    assert _blocked(in_trouble)["PAY_EINVOICE"] == "no_invoice_fee"


def test_instalments_only_for_customers_with_a_debt() -> None:
    decision = _decide(heavy_user(invoice_fee_last_sek=29.0))
    assert _blocked(decision)["PAY_INSTALMENT"] == "no_debt"
    assert "PAY_EINVOICE" in _shown(decision)


def test_recently_declined_offers_are_not_shown_again() -> None:
    first = _decide(heavy_user())
    assert _shown(first)[0] == "PLAN_15GB"
    again = _decide(heavy_user(), declined=frozenset({"PLAN_15GB"}))
    assert "PLAN_15GB" not in _shown(again)
    assert _blocked(again)["PLAN_15GB"] == "declined_recently"
    # The next-best plan takes its place, after offers that save more (37 and 30 kr against 16).
    assert _shown(again) == ["ADDON_DATA_10GB", "LOYALTY_NEW_PRICE", "PLAN_30GB"]


def test_validity_dates_are_inclusive() -> None:
    ends_today = offer("PLAN_LAST_DAY", monthly_fee_sek=150.0, data_gb=20, valid_to=INVOICE_DATE)
    starts_tomorrow = offer(
        "PLAN_NEXT", monthly_fee_sek=140.0, data_gb=20, valid_from=INVOICE_DATE + dt.timedelta(1)
    )
    catalog = make_catalog(ends_today, starts_tomorrow)
    decision = _decide(heavy_user(), catalog=catalog)
    blocked = _blocked(decision)
    assert blocked["PLAN_LAST_DAY"] is None
    assert blocked["PLAN_NEXT"] == "not_valid_on_date"
    assert blocked["PLAN_10GB_LEGACY"] == "not_valid_on_date"
    assert _shown(decision)[0] == "PLAN_LAST_DAY"  # 150 kr for 20 GB saves the most


def test_offers_for_another_segment_are_never_shown() -> None:
    decision = _decide(account(), policy="model", segment="business")
    blocked = _blocked(decision)
    assert blocked["ADDON_STREAMING"] == "not_for_segment"
    assert blocked["PLAN_1GB"] == "not_for_segment"
    assert not {"ADDON_STREAMING", "PLAN_1GB"} & set(_shown(decision))


def test_tenure_rules() -> None:
    decision = _decide(account(tenure_months=3), policy="model")
    blocked = _blocked(decision)
    assert blocked["ADDON_EXTRA_SIM"] == "tenure_too_short"  # six months
    assert blocked["LOYALTY_NEW_PRICE"] == "tenure_too_short"  # twelve months
    assert _blocked(_decide(account(tenure_months=12), policy="model"))["LOYALTY_NEW_PRICE"] is None


def test_no_cheaper_plan_while_bound_but_upgrades_and_add_ons_are_fine() -> None:
    bound = heavy_user(
        current_plan_id="PLAN_30GB",
        current_monthly_fee_sek=299.0,
        current_new_customer_fee_sek=279.0,
        current_data_gb=30.0,
        current_roaming_data_gb=10.0,
        data_gb_m1=28.0,
        data_gb_m2=29.0,
        data_gb_m3=27.0,
        data_gb_avg_3m=28.0,
        data_gb_max_3m=29.0,
        binding_end_date="2027-03-31",
    )
    decision = _decide(bound, policy="model")
    blocked = _blocked(decision)
    assert blocked["PLAN_15GB"] == "downgrade_while_bound"
    assert blocked["PLAN_5GB"] == "downgrade_while_bound"
    assert blocked["PLAN_60GB"] is None  # an upgrade their usage justifies
    assert blocked["ADDON_DATA_10GB"] is None
    assert blocked["LOYALTY_NEW_PRICE"] is None
    # Binding over: the cheaper plan may be offered again.
    free = _decide({**bound, "binding_end_date": "2026-11-01"}, policy="model")
    assert _blocked(free)["PLAN_15GB"] != "downgrade_while_bound"


def test_a_binding_is_judged_on_the_invoices_date_not_the_rows() -> None:
    # The store's newest row is dated after the binding's end (1 December); the invoice of
    # 30 November still falls inside it, and one of 2 December no longer does.
    bound = account(
        current_plan_id="PLAN_30GB",
        current_monthly_fee_sek=299.0,
        current_new_customer_fee_sek=279.0,
        current_data_gb=30.0,
        current_roaming_data_gb=10.0,
        data_gb_avg_3m=8.0,
        binding_end_date="2026-12-01",
        months_to_binding_end=0,
    )
    inside = _decide(bound, policy="model", usage_insights=True)
    assert _blocked(inside)["PLAN_15GB"] == "downgrade_while_bound"
    assert inside.usage_summary is not None
    assert inside.usage_summary["binding_end_date"] == "2026-12-01"
    after = decide(
        request(max_offers=10, invoice_date=dt.date(2026, 12, 2)),
        FakeFeatureSource(consent_row=consent(), account_row=bound),
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, {}, default=0.5),
        recently_declined=frozenset(),
    )
    assert _blocked(after)["PLAN_15GB"] != "downgrade_while_bound"
    assert after.usage_summary is not None and after.usage_summary["binding_end_date"] is None


def test_good_standing_required_where_the_catalog_says_so() -> None:
    decision = _decide(heavy_user(late_payments_12m=1))
    blocked = _blocked(decision)
    assert blocked["PLAN_15GB"] == "not_in_good_standing"
    assert blocked["ADDON_DATA_10GB"] == "not_in_good_standing"
    assert blocked["PLAN_5GB"] == "current_plan"
    # Loyalty does not require good standing.
    assert _shown(decision)[0] == "LOYALTY_NEW_PRICE"


@pytest.mark.parametrize("new_price", [249.0, math.nan, 259.0])
def test_loyalty_only_when_new_customers_pay_less(new_price: float) -> None:
    decision = _decide(account(current_new_customer_fee_sek=new_price), policy="model")
    assert _blocked(decision)["LOYALTY_NEW_PRICE"] == "no_loyalty_gap"


@pytest.mark.parametrize("policy", ["model", "rules", "non_personalised"])
def test_a_former_customers_final_invoice_offers_nothing_but_help_with_a_debt(policy: str) -> None:
    # The contract ended the day before the invoice: every offer is blocked and logged as such.
    ended = (INVOICE_DATE - dt.timedelta(days=1)).isoformat()
    former = heavy_user(invoice_fee_last_sek=29.0, contract_ended_on=ended)
    decision = _decide(former, policy=policy, usage_insights=True)
    assert decision.offers == ()
    blocked = {offer_id: code for offer_id, code in _blocked(decision).items() if code}
    elsewhere = {"current_plan", "not_valid_on_date", "not_for_segment", "not_in_segment_list"}
    assert set(blocked.values()) - elsewhere == {"contract_ended", "no_debt"}
    assert blocked["LOYALTY_NEW_PRICE"] == blocked["PLAN_15GB"] == "contract_ended"
    assert blocked["PAY_INSTALMENT"] == "no_debt"  # nothing owed
    assert blocked["PAY_EINVOICE"] == "contract_ended"  # no future invoice to pay otherwise
    assert decision.policy == policy
    # The final invoice's summary still shows what was used and billed, and compares no plans.
    assert decision.usage_summary is not None
    assert decision.usage_summary["plan"]["plan_id"] == "PLAN_5GB"
    assert decision.usage_summary["plan_fit"] is None
    # With reminders unpaid, the debt may still be spread; nothing else is offered.
    owing = _decide({**former, "unpaid_reminders": 2}, policy=policy)
    assert _shown(owing) == ["PAY_INSTALMENT"]


@pytest.mark.parametrize("lifted", sorted(LIFTABLE))
def test_no_rule_an_evaluation_lifts_lets_an_offer_through_to_a_former_customer(
    lifted: str,
) -> None:
    ended = (INVOICE_DATE - dt.timedelta(days=1)).isoformat()
    former = heavy_user(invoice_fee_last_sek=29.0, contract_ended_on=ended, tenure_months=1)
    decision = decide(
        request(max_offers=10),
        FakeFeatureSource(consent_row=consent(), account_row=former),
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, {}, default=0.5),
        recently_declined=frozenset({"PLAN_15GB", "LOYALTY_NEW_PRICE", "ADDON_DATA_10GB"}),
        lifted=frozenset({lifted}),
    )
    assert decision.offers == ()


def test_a_contract_is_in_force_on_the_day_it_ends() -> None:
    # Ended on the invoice date itself, or after it (an invoice decided late, read from the
    # store's newest row): the customer was still a customer on the invoice's date.
    for ended in (INVOICE_DATE, INVOICE_DATE + dt.timedelta(days=20)):
        decision = _decide(heavy_user(contract_ended_on=ended.isoformat()), policy="model")
        assert "contract_ended" not in _blocked(decision).values()
        assert decision.offers
    with_insight = _decide(
        heavy_user(contract_ended_on=INVOICE_DATE.isoformat()), usage_insights=True
    )
    assert with_insight.usage_summary is not None
    assert with_insight.usage_summary["plan_fit"] is not None


def test_eligibility_is_a_pure_predicate() -> None:
    customer = Account.from_features(account())
    args: dict[str, Any] = {
        "segment": "consumer",
        "invoice_date": INVOICE_DATE,
        "recently_declined": frozenset(),
    }
    assert eligibility(OFFERS["PLAN_15GB"], customer, **args) == "current_plan"
    assert eligibility(OFFERS["PLAN_30GB"], customer, **args) is None
    assert eligibility(OFFERS["PLAN_10GB_LEGACY"], customer, **args) == "not_valid_on_date"


def test_offer_attributes_follow_the_feature_view() -> None:
    attributes = offer_attributes(OFFERS["PLAN_UNLIMITED"])
    assert list(attributes) == list(OFFER_ATTRIBUTES)
    assert attributes["offer_kind_code"] == 0.0
    assert math.isnan(attributes["offer_data_gb"])  # unlimited
    assert math.isnan(attributes["offer_voice_minutes"])
    assert attributes["offer_new_customer_fee_sek"] == 399.0
    assert attributes["offer_binding_months"] == 24.0
    addon = offer_attributes(OFFERS["ADDON_DATA_10GB"])
    assert addon["offer_kind_code"] == 1.0
    assert math.isnan(addon["offer_new_customer_fee_sek"])  # same price as for new customers


def test_the_segment_list_states_each_offers_fee_change_without_usage() -> None:
    """A customer without profiling consent on Mobil 30 GB (299 kr, 279 kr for new customers)
    who paid a 29 kr invoice fee: the fixed list's offers are logged with what they change the
    monthly fees by, from the catalog and the contract alone; the answer does not carry it."""
    row = account(
        current_plan_id="PLAN_30GB",
        current_monthly_fee_sek=299.0,
        current_new_customer_fee_sek=279.0,
        current_data_gb=30.0,
        current_roaming_data_gb=10.0,
        invoice_fee_last_sek=29.0,
    )
    source = FakeFeatureSource(consent_row=consent(profiling=False), account_row=row)
    decision = decide(
        request(max_offers=10),
        source,
        CATALOG,
        policy="model",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert decision.policy == "non_personalised" and "profile" not in source.calls
    records = {record.offer_id: record for record in decision.candidates}
    changes = {
        offer.offer_id: records[offer.offer_id].fee_change_sek_per_month
        for offer in decision.offers
    }
    # The loyalty price against today's fee, the invoice fee a way to pay avoids.
    assert changes == {"LOYALTY_NEW_PRICE": -20.0, "PAY_EINVOICE": -29.0, "PAY_AUTOGIRO": -29.0}
    assert all(records[o].customer_saving_sek_per_month is None for o in changes)
    # The featured plan includes 15 GB of the 30 the customer has: without usage nobody can
    # tell it fits, so it is not shown; what it would change the fee by is logged all the same.
    featured = records["PLAN_15GB"]
    assert featured.blocked_by == "smaller_plan_without_profiling"
    assert featured.fee_change_sek_per_month == 219.0 - 299.0
    assert records["ADDON_DATA_10GB"].fee_change_sek_per_month is None  # not on the list
    assert all("fee_change_sek_per_month" not in o for o in decision.to_public_dict()["offers"])


@pytest.mark.parametrize(
    ("plan", "fee", "data_gb", "roaming_gb", "shown"),
    [
        ("PLAN_10GB_LEGACY", 229.0, 10.0, 3.0, True),  # more of everything, for less
        ("PLAN_5GB", 179.0, 5.0, 3.0, False),  # dearer: an upgrade only usage could justify
        ("PLAN_30GB", 299.0, 30.0, 10.0, False),  # less data and roaming
        ("PLAN_UNLIMITED", 399.0, math.nan, 20.0, False),  # unlimited data today
    ],
)
def test_the_featured_plan_is_shown_without_usage_only_when_it_includes_no_less(
    plan: str, fee: float, data_gb: float, roaming_gb: float, shown: bool
) -> None:
    row = account(
        current_plan_id=plan,
        current_monthly_fee_sek=fee,
        current_new_customer_fee_sek=fee,
        current_data_gb=data_gb,
        current_roaming_data_gb=roaming_gb,
        # Usage the model path would weigh: it must not matter here.
        data_gb_avg_3m=40.0,
        data_gb_max_3m=45.0,
    )
    decision = _decide(row, policy="model", profiling=False, max_offers=10)
    assert decision.policy == "non_personalised"
    assert ("PLAN_15GB" in _shown(decision)) is shown
    if shown:
        reasons = next(o for o in decision.offers if o.offer_id == "PLAN_15GB").reasons
        assert "GB" not in " ".join(r.text for r in reasons[:1])


def test_an_add_ons_fee_change_is_its_fee_and_an_unknown_plan_fee_states_none() -> None:
    known = Account.from_features(heavy_user())
    streaming, plan = OFFERS["ADDON_STREAMING"], OFFERS["PLAN_15GB"]
    assert fee_change(streaming, known, shown_price(streaming, known)) == 99.0
    assert fee_change(plan, known, shown_price(plan, known)) == 219.0 - 179.0
    assert fee_change(OFFERS["PAY_INSTALMENT"], known, 0.0) == 0.0  # a debt plan adds no fee
    unknown = Account.from_features(heavy_user(current_monthly_fee_sek=None))
    assert fee_change(plan, unknown, shown_price(plan, unknown)) is None
    assert fee_change(streaming, unknown, shown_price(streaming, unknown)) == 99.0


def test_plan_fit_table_holds_each_accounts_own_plan_fit() -> None:
    """Worked out for many accounts at once, each account's rows are the ones it gets alone;
    an account or offer the table does not hold is worked out as before."""
    accounts = [
        Account.from_features(account()),
        Account.from_features(heavy_user()),
        Account.from_features(account(data_gb_m3=None, current_data_gb=math.nan)),
    ]
    offers = list(CATALOG.offers)
    table = PlanFitTable([one.features for one in accounts], offers)
    chosen = [offers[3], offers[0], offers[-1]]
    for one in accounts:
        alone = plan_fit_matrix(one, offer_matrix(chosen))
        read = plan_fit_matrix(one, offer_matrix(chosen), known=table, offer_list=chosen)
        assert read.tobytes() == alone.tobytes()
        assert table.rows(one_inputs(one), chosen) is not None
    heavy = plan_fit_matrix(accounts[1], offer_matrix([OFFERS["PLAN_15GB"]]))
    # Mobil 5 GB at 179 kr with 9, 8.5 and 9.5 GB used: 116 kr of data overage a month.
    assert heavy[0, 0] == 295.0
    other = Account.from_features(heavy_user(data_gb_m1=20.0))
    assert table.rows(one_inputs(other), chosen) is None
    stranger = offer("PLAN_X", kind="plan", monthly_fee_sek=1.0)
    assert table.rows(one_inputs(accounts[0]), [stranger]) is None


def one_inputs(one: Account) -> np.ndarray:
    return _fit_inputs(one.features)
