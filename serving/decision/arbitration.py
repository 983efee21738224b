"""Value arbitration: expected value of each offer, ranking, and the cut to what an invoice shows.

Expected value over ``HORIZON_MONTHS``:
``p_accept × monthly revenue change × horizon`` plus, for offers that leave the customer better
off (a plan-fit saving, a loyalty price, payment help), the retention value
``p_accept × churn_risk × CHURN_REDUCTION × current monthly revenue × horizon``.
The monthly revenue change is what the customer would pay on the offer minus what they pay now,
the negative of their saving: a dearer plan's fee step net of the overage it removes, an add-on's
fee net of the overage it removes, the price cut of a loyalty offer, the invoice fee avoided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from serving.decision.candidates import Candidate

HORIZON_MONTHS = 12
# Share of the churn risk an accepted money-saving offer takes away.
CHURN_REDUCTION = 0.3

T = TypeVar("T")


@dataclass(frozen=True)
class Valued:
    """A candidate with its acceptance probability and expected value."""

    candidate: Candidate
    acceptance: float
    expected_value_sek: float


def leaves_customer_better_off(candidate: Candidate) -> bool:
    kind = candidate.offer.kind
    return kind in ("loyalty", "payment_help") or (candidate.saving_sek or 0.0) > 0


def expected_value(
    candidate: Candidate,
    acceptance: float,
    churn_risk: float,
    current_revenue_sek: float,
    *,
    horizon_months: int = HORIZON_MONTHS,
    churn_reduction: float = CHURN_REDUCTION,
) -> float:
    """Expected value in SEK over the horizon (see the module text)."""
    revenue_change = -(candidate.saving_sek or 0.0)
    value = acceptance * revenue_change * horizon_months
    if leaves_customer_better_off(candidate):
        value += acceptance * churn_risk * churn_reduction * current_revenue_sek * horizon_months
    return round(value, 2)


def by_expected_value(valued: Sequence[Valued]) -> list[Valued]:
    """Highest expected value first; the offer id breaks ties so equal inputs rank equally."""
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
