"""A small monitored world: a training window's customers, then model decisions served by the
real engine for customers drawn the same way or with their data usage shifted, logged in a real
decision log with events that follow (or stop following) the predicted acceptance."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from serving.decision.engine import decide
from serving.decision_log import DecisionLog, EventRecord
from serving.offers import decision_record
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    account,
    consent,
    make_catalog,
    profile,
    request,
)
from training.drift import InputProfile, input_profile
from training.model_inputs import monitored_frame

# What the fake ranker predicts for every offer.
PREDICTED_ACCEPTANCE = 0.3
MODEL_VERSION = "offer-ranker/7"
# The decisions are spread over these two ISO weeks (2026-W47 and 2026-W48).
FIRST_DECISION = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)  # a Monday
DECISION_DAYS = 14
TRAIN_WINDOW = "2025-11-01..2026-08-01"
DATA_MEASURES = ("data_gb_",)


@dataclasses.dataclass(frozen=True)
class Served:
    """How many decisions placed an offer first, and how many of those offers were accepted."""

    first_offers: int
    accepted: int


def customer(rng: np.random.Generator, data_scale: float = 1.0) -> tuple[dict[str, Any], ...]:
    """(consent, account, profile) rows of one adult customer who allows profiling: data usage
    around the factory account's 8 GB a month times ``data_scale``, and a tenure, age and survey
    answer of their own."""
    usage = rng.lognormal(0.0, 0.35) * data_scale
    row = account()
    for name in list(row):
        if name.startswith(DATA_MEASURES) and isinstance(row[name], float):
            row[name] = round(row[name] * usage, 3)
    row["tenure_months"] = int(rng.integers(1, 120))
    row["invoice_amount_last_sek"] = round(float(rng.normal(249.0, 20.0)), 2)
    person = profile(age=int(rng.integers(18, 85)), satisfaction=float(rng.integers(1, 6)))
    return consent(), row, person


def training_profile(customers: int, seed: int) -> InputProfile:
    """The input profile of a training window of ``customers`` customers, built as training
    builds it (``training.train.training_input_profile``): one row per decision."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(customers):
        _, row, person = customer(rng)
        rows.append({**row, **person, "segment": "consumer"})
    return input_profile(monitored_frame(pd.DataFrame(rows)), TRAIN_WINDOW)


def serve(
    log: DecisionLog,
    decisions: int,
    seed: int,
    *,
    data_scale: float = 1.0,
    acceptance_scale: float = 1.0,
    first_decision: dt.datetime = FIRST_DECISION,
    model_version: str = MODEL_VERSION,
) -> Served:
    """Decide ``decisions`` invoices with the engine, log them, and report an accept for each
    first-placed offer with probability ``acceptance_scale`` × the predicted acceptance."""
    rng = np.random.default_rng(seed)
    catalog = make_catalog()
    scorer = FakeScorer(catalog, {}, default=PREDICTED_ACCEPTANCE, model_version=model_version)
    accepted = first_offers = 0
    moments = _moments(decisions, first_decision)
    for number, created_at in zip(range(decisions), moments, strict=True):
        consent_row, account_row, profile_row = customer(rng, data_scale)
        decision = decide(
            request(invoice_id=f"INV-{seed}-{number:05d}", customer_id=f"C{seed}-{number:05d}"),
            FakeFeatureSource(consent_row, account_row, profile_row),
            catalog,
            policy="model",
            scorer=scorer,
            recently_declined=frozenset(),
        )
        record = decision_record(decision, f"D-{seed}-{number:05d}", "{}")
        log.record(dataclasses.replace(record, created_at=created_at))
        first = next((offer for offer in decision.offers if offer.rank == 1), None)
        first_offers += first is not None
        probability = acceptance_scale * (first.acceptance_probability or 0.0) if first else 0.0
        if first is not None and rng.random() < probability:
            accepted += 1
            log.record_event(
                EventRecord(
                    f"E-{record.decision_id}",
                    record.decision_id,
                    first.offer_id,
                    "accept",
                    created_at + dt.timedelta(days=1),
                    created_at + dt.timedelta(days=1),
                )
            )
    return Served(first_offers, accepted)


def _moments(decisions: int, first: dt.datetime) -> Iterator[dt.datetime]:
    step = dt.timedelta(days=DECISION_DAYS) / decisions
    for number in range(decisions):
        yield first + number * step


# A period holding every decision ``serve`` logs.
PERIOD = (FIRST_DECISION - dt.timedelta(days=1), FIRST_DECISION + dt.timedelta(days=DECISION_DAYS))
