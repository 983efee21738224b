"""What the decision log stores and hands back: decisions, their offers, events, experiments."""

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


@dataclass(frozen=True)
class StoredDecision:
    """What a repeated request needs: who the decision was for and the answer given."""

    decision_id: str
    customer_id: str
    response_json: str


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


@dataclass(frozen=True)
class ExperimentSpec:
    """An offer experiment as defined: customers split over the variants from start to end."""

    key: str
    description: str
    variants: tuple[Variant, ...]
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class Experiment(ExperimentSpec):
    """An experiment as stored."""

    created_at: dt.datetime


@dataclass(frozen=True)
class VariantCounts:
    """An experiment variant's decisions as logged, the figures its report is computed from."""

    customers: int
    decisions: int
    offers_shown: int
    accepted: int
