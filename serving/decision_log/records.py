"""What the decision log stores and hands back: decisions, their offers, events, experiments,
consent changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoggedOffer:
    offer_id: str
    rank: int
    propensity: float | None
    score: float | None
    # The acceptance the model predicted for the offer (None when the rules chose it).
    acceptance: float | None = None


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as it is logged: the answer given and what it was based on.

    ``response_json`` is the answer as sent; ``log`` what else the decision was made from
    (propensities, every candidate and why it was blocked, churn risk), without repeating it.
    """

    decision_id: str
    invoice_id: str
    customer_id: str
    invoice_date: dt.date
    created_at: dt.datetime
    policy: str
    model_version: str | None
    experiment_key: str | None
    experiment_variant: str | None
    degraded: str | None
    consent: Mapping[str, bool]
    response_json: str
    log: Mapping[str, Any]
    offers: tuple[LoggedOffer, ...]
    # The customer inputs the model scored (training.model_inputs.monitored_inputs), for input
    # monitoring; None when no model scored the decision.
    model_inputs: Mapping[str, Any] | None = None

    @property
    def provisional(self) -> bool:
        """A degraded answer without offers: a later request for the invoice decides afresh.

        Nothing was shown that a customer could act on, so no event can refer to it; a degraded
        answer with offers (the rules' or the champion's) may be on a printed invoice and stays.
        ``statements.build_statements`` reads the same rule back from the log (``find``).
        """
        return self.degraded is not None and not self.offers


@dataclass(frozen=True)
class StoredDecision:
    """What a repeated request needs: who the decision was for, the answer given, and whether it
    is provisional (see :attr:`DecisionRecord.provisional`): then the request decides afresh."""

    decision_id: str
    customer_id: str
    response_json: str
    provisional: bool


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    decision_id: str
    offer_id: str
    type: str
    occurred_at: dt.datetime
    received_at: dt.datetime


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: its share of the customers and the policy deciding for them."""

    name: str
    weight: float
    policy: str


DEFAULT_LAYER = "default"


@dataclass(frozen=True)
class ExperimentSpec:
    """An offer experiment as defined: customers split over the variants from start to end.

    ``layer``: experiments of one layer may not overlap in time; ``control``: the variant the
    others are compared with (None: the first ``model`` variant, else the first);
    ``planned_customers``: the sample the experiment was designed for, if stated.
    """

    key: str
    description: str
    variants: tuple[Variant, ...]
    start: dt.datetime
    end: dt.datetime
    layer: str = DEFAULT_LAYER
    control: str | None = None
    planned_customers: int | None = None


@dataclass(frozen=True, kw_only=True)
class Experiment(ExperimentSpec):
    """An experiment as stored; ``stopped_at`` when it was stopped before its end."""

    created_at: dt.datetime
    stopped_at: dt.datetime | None = None

    @property
    def closes_at(self) -> dt.datetime:
        """When it stops assigning: its end, or the moment it was stopped if earlier."""
        if self.stopped_at is None:
            return self.end
        return min(self.end, self.stopped_at)


@dataclass(frozen=True)
class CustomerOutcome:
    """One enrolled customer's decisions in an experiment and what came back, the unit its
    report is computed from (customers are what is randomised, not decisions).

    ``impressions``: impression events; ``clicked`` and ``accepted``: decisions with a click or an
    accept; ``revenue_change_sek``: what the accepted offers change the customer's monthly bill by
    (see ``serving.experiments``), ``unpriced_accepts`` the accepted offers without that figure;
    ``objected_at``: the first marketing withdrawal after the first decision.
    """

    variant: str
    customer_id: str
    decisions: int
    offers_shown: int
    impressions: int
    clicked: int
    accepted: int
    first_decided_at: dt.datetime
    revenue_change_sek: float = 0.0
    unpriced_accepts: int = 0
    objected_at: dt.datetime | None = None


@dataclass(frozen=True)
class CustomerDay:
    """One enrolled customer's decisions for invoices dated ``day``: how many, and how many of
    them had a click and an accept (the report's cumulative results over time)."""

    variant: str
    customer_id: str
    day: dt.date
    decisions: int
    clicked: int
    accepted: int


@dataclass(frozen=True)
class FirstOffer:
    """The offer an enrolled customer's decision showed first: its logged propensity (None when
    none was logged) and whether it was accepted. What off-policy estimates weigh."""

    decision_id: str
    customer_id: str
    invoice_date: dt.date
    variant: str
    offer_id: str
    propensity: float | None
    accepted: bool


@dataclass(frozen=True)
class ConsentChangeRecord:
    """One consent answer as stored: what was answered, when it was received, and when it was
    written to the online store (None until it was)."""

    change_id: str
    customer_id: str
    purpose: str
    granted: bool
    updated_at: dt.datetime
    received_at: dt.datetime
    applied_at: dt.datetime | None = None

    def same_answer(self, other: ConsentChangeRecord) -> bool:
        """Whether two records carry the same answer (the times they were received aside)."""
        return (self.customer_id, self.purpose, self.granted, self.updated_at) == (
            other.customer_id,
            other.purpose,
            other.granted,
            other.updated_at,
        )

    def order(self) -> tuple[dt.datetime, dt.datetime, str]:
        """Sorts a customer's answers for one purpose oldest first; the last one holds. Answers
        given at the same moment are ordered by when they were received."""
        return (self.updated_at, self.received_at, self.change_id)
