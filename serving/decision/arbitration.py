"""Arbitration by one stated objective, ranking, and the cut to what an invoice shows.

Each candidate that passed eligibility and the guardrails is scored as

    acceptance × value,   value = w_revenue × revenue change
                                  + w_retention × retention value
                                  + w_customer × customer saving
                                  + accepted offer value (only when the rest is positive)

over ``horizon_months``. The revenue change is what the customer would pay a month on the offer
minus what they pay now (the negative of their saving, from plan fit at the price shown); the
retention value is ``churn_risk × churn_reduction × what the customer pays now`` for offers that
leave the customer better off; the customer saving is the plan-fit saving. The accepted offer
value is what an offer the customer takes is worth whatever its money terms: an offer taken is
one that fits (and an invoice line not taken costs attention, a declined one blocks the offer for
the next invoices). It is added only to an offer whose money terms are already positive, and the
floors below read the money terms alone, so it never makes an offer worth showing; it orders
the offers that are, tempering the money terms' spread, so that an unlikely offer of large revenue
does not lead an invoice over a likely one of modest value.

Offers that cost the operator revenue (a cheaper plan that fits, a loyalty price, a fee-free way to
pay, payment help) are shown only for a stated customer benefit (:func:`benefit_reason`), and the
revenue they give up is not held against them: their money terms are ``w_customer × saving +
w_retention × retention``, so among them the order follows (benefit + accepted offer value) ×
acceptance. An offer whose
value is not positive is never shown, so the product is never larger because the customer is less
likely to take the offer: with everything else equal, a higher acceptance never lowers a rank.

The order is greedy: at each place the offer of the highest acceptance × value, unless a
likelier offer is worth at least ``1 − value_tolerance`` of it, in which case the likeliest of
those goes first. Two acceptances estimated a few points apart decide between offers of
different value; when the products are that close, the estimate's error flips the choice as
often as the value does, while the likelier offer is more often the one the customer takes. The
tolerance bounds what the invoice gives up for it: each offer shown is worth at least
``1 − value_tolerance`` of the best one still open (at the default 0.3, 70 % of it). Raising an
offer's acceptance raises both its product and its place among the likelier offers, so it still
never lowers its rank (the property test checks it with the tolerance too).

``max_offers`` is a maximum, not a quota: below ``min_acceptance``, or below ``min_value_sek`` of
acceptance × money terms, an offer is not shown (an invoice line nobody takes costs the customer's
attention).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeVar

from serving.decision.candidates import Candidate
from serving.decision.guardrails import NEARLY_USED_SHARE
from serving.decision.inputs import Account

if TYPE_CHECKING:
    from core.settings import Settings

T = TypeVar("T")

# Benefit reasons: why an offer that lowers the operator's revenue is on the invoice.
PLAN_FIT_SAVING = "plan_fit_saving"
LOYALTY_PRICE = "loyalty_price"
PAYMENT_HELP = "payment_help"

# Blocks recorded in the decision log for candidates the objective does not show.
NO_VALUE = "no_value"
BELOW_ACCEPTANCE_FLOOR = "below_acceptance_floor"
BELOW_VALUE_FLOOR = "below_value_floor"


@dataclass(frozen=True)
class Objective:
    """The weights, horizon and floors of the objective (``OFFERS_*`` settings).

    Defaults: a krona of revenue and a krona of retained revenue count alike; a krona the customer
    saves counts half (``weight_customer`` 0.5), so an upgrade is worth half its fee step and a
    saving offer half its saving, plus retention. An accepted saving offer removes 30 % of the
    churn risk. An accepted offer whose money terms are positive is worth 150 SEK more
    (``accepted_offer_value_sek``; the README's "The objective" says what it did on the behaviour
    worlds). Within 30 % of the best open offer's acceptance × value, the likelier offer goes
    first (``value_tolerance``; measured in the README's "The objective"). Below 2 % acceptance,
    or 1 SEK of
    acceptance × money terms over the year, an offer is left off the invoice. An upgrade needs a
    recent month with 80 % of an allowance it raises used.
    """

    weight_revenue: float = 1.0
    weight_retention: float = 1.0
    weight_customer: float = 0.5
    horizon_months: int = 12
    churn_reduction: float = 0.3
    accepted_offer_value_sek: float = 150.0
    min_acceptance: float = 0.02
    min_value_sek: float = 1.0
    upgrade_usage_share: float = NEARLY_USED_SHARE
    value_tolerance: float = 0.3
    # Share of model decisions that explore (exploration.py); the API's default is in settings.
    exploration_share: float = 0.0

    def valuation(self) -> str:
        """The settings that value a served decision (all but the exploration share), as one
        string: served values measured under different ones are not comparable."""
        fields = asdict(self)
        fields.pop("exploration_share")
        return ",".join(f"{name}={value}" for name, value in fields.items())

    @classmethod
    def from_settings(cls, settings: Settings) -> Objective:
        return cls(
            weight_revenue=settings.weight_revenue,
            weight_retention=settings.weight_retention,
            weight_customer=settings.weight_customer,
            horizon_months=settings.horizon_months,
            churn_reduction=settings.churn_reduction,
            accepted_offer_value_sek=settings.accepted_offer_value_sek,
            min_acceptance=settings.min_acceptance,
            min_value_sek=settings.min_value_sek,
            upgrade_usage_share=settings.upgrade_usage_share,
            value_tolerance=settings.value_tolerance,
            exploration_share=settings.exploration_share,
        )


DEFAULT_OBJECTIVE = Objective()


@dataclass(frozen=True)
class Valued:
    """A candidate with its acceptance probability and the objective's score (SEK)."""

    candidate: Candidate
    acceptance: float
    expected_value_sek: float


@dataclass(frozen=True)
class OfferValue:
    """The objective's terms for one candidate over the horizon, in SEK, before acceptance."""

    revenue_change_sek: float
    retention_sek: float
    customer_saving_sek: float
    benefit_reason: str | None
    # The weighted revenue, retention and saving: what the floors read.
    money_sek: float
    # The money terms and, when they are positive, the accepted offer value: what ranks.
    value_sek: float


def benefit_reason(candidate: Candidate, account: Account) -> str | None:
    """The stated customer benefit of an offer, or ``None``: a plan-fit saving (a cheaper plan
    that fits, an add-on cheaper than the overage it removes, a fee-free way to pay), the loyalty
    fairness price, or payment help for a customer with unpaid reminders or in collection."""
    if (candidate.saving_sek or 0.0) > 0:
        return PLAN_FIT_SAVING
    kind = candidate.offer.kind
    if kind == "loyalty":
        return LOYALTY_PRICE
    if kind == "payment_help" and account.in_payment_trouble:
        return PAYMENT_HELP
    return None


def offer_value(
    candidate: Candidate,
    account: Account,
    churn_risk: float,
    current_revenue_sek: float,
    objective: Objective = DEFAULT_OBJECTIVE,
) -> OfferValue:
    """The objective's value of one offer before acceptance (see the module text)."""
    horizon = objective.horizon_months
    saving = (candidate.saving_sek or 0.0) * horizon
    revenue_change = -saving
    reason = benefit_reason(candidate, account)
    retention = (
        churn_risk * objective.churn_reduction * current_revenue_sek * horizon
        if reason is not None
        else 0.0
    )
    money = objective.weight_retention * retention + objective.weight_customer * saving
    if reason is None:
        money += objective.weight_revenue * revenue_change
    return OfferValue(
        revenue_change_sek=round(revenue_change, 2),
        retention_sek=round(retention, 2),
        customer_saving_sek=round(saving, 2),
        benefit_reason=reason,
        money_sek=money,
        value_sek=money + objective.accepted_offer_value_sek if money > 0 else money,
    )


def floor_block(acceptance: float, money_sek: float, objective: Objective) -> str | None:
    """Why an offer with this acceptance and these money terms (:attr:`OfferValue.money_sek`)
    is not worth an invoice line, or ``None``. The floors read the money terms alone, so the
    accepted offer value never makes an offer worth showing."""
    if money_sek <= 0:
        return NO_VALUE
    if acceptance < objective.min_acceptance:
        return BELOW_ACCEPTANCE_FLOOR
    if acceptance * money_sek < objective.min_value_sek:
        return BELOW_VALUE_FLOOR
    return None


def by_expected_value(valued: Sequence[Valued]) -> list[Valued]:
    """Highest acceptance × value first; the offer id breaks ties so equal inputs rank equally."""
    return sorted(
        valued, key=lambda item: (-item.expected_value_sek, item.candidate.offer.offer_id)
    )


def cut(ranked: Sequence[T], max_offers: int, kind_of: Callable[[T], str]) -> list[T]:
    """The first ``max_offers`` of a ranking, with at most one plan (a customer has one plan)."""
    chosen: list[T] = []
    has_plan = False
    for item in ranked:
        if len(chosen) >= max_offers:
            break
        if kind_of(item) == "plan":
            if has_plan:
                continue
            has_plan = True
        chosen.append(item)
    return chosen
