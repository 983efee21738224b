"""Scoring: the model matrix for the candidates, acceptance, churn risk and contributions.

The matrix holds what training's frame holds (customer features, segment, offer attributes,
plan fit) in ``training.model_inputs.RANKER_FEATURES`` order, with the same derived columns, so a
served score sees exactly the inputs training saw. It is assembled in numpy rather than through
``ranker_matrix``'s per-column frame pass, which costs about 3 ms for twelve rows on the request
path; tests/decision/test_scoring.py holds the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from core.plan_fit import PLAN_FIT_OUTPUTS
from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
    OFFER_ATTRIBUTES,
)
from serving.decision.inputs import Scorer, as_float
from training.model_inputs import (
    CHURN_FEATURES,
    CUSTOMER_FEATURES,
    RANKER_FEATURES,
    SERVED_POSITION,
    SHOWN_POSITION,
    new_customer_discount_sek,
)

TOP_CONTRIBUTIONS = 5
# Personal attributes whose value is never repeated beside a contribution: the answer (and the
# decision log, which stores it) says that age weighed, not the customer's age.
UNDISCLOSED_VALUES = frozenset({"age", "satisfaction"})
# Inputs whose value is a code, not a quantity: that the offer's identity weighed is said, its
# code (a number derived from the offer id) would mean nothing to a reader.
CODED_VALUES = frozenset({"offer_identity_code"})
_VALUES_NOT_SHOWN = UNDISCLOSED_VALUES | CODED_VALUES


@dataclass(frozen=True)
class Contribution:
    """One feature's share of an offer's score (LightGBM ``pred_contrib``, log-odds)."""

    feature: str
    value: float | None
    contribution: float


@dataclass(frozen=True)
class Scores:
    """What the models said about the scored candidates."""

    rows: np.ndarray
    acceptance: np.ndarray
    churn_risk: float


@cache
def _layout() -> tuple[tuple[str, ...], list[int], list[int], list[int]]:
    """Stored customer columns, and where customer, offer and plan-fit columns sit in the matrix."""
    stored = {**CUSTOMER_USAGE, **CUSTOMER_CONTRACT, **CUSTOMER_BILLING, **CUSTOMER_PROFILE}
    customer = tuple(name for name in CUSTOMER_FEATURES if name in stored)
    position = {name: j for j, name in enumerate(RANKER_FEATURES)}
    return (
        customer,
        [position[name] for name in customer],
        [position[name] for name in OFFER_ATTRIBUTES],
        [position[name] for name in PLAN_FIT_OUTPUTS],
    )


@cache
def _segment_position() -> int:
    return RANKER_FEATURES.index("segment_is_business")


@cache
def _discount_positions() -> tuple[int, int, int]:
    """Offer fee and new-customer fee in the offer block; the discount in the matrix."""
    offer_columns = list(OFFER_ATTRIBUTES)
    return (
        offer_columns.index("offer_monthly_fee_sek"),
        offer_columns.index("offer_new_customer_fee_sek"),
        RANKER_FEATURES.index("offer_new_customer_discount_sek"),
    )


@cache
def _position_at() -> int:
    return RANKER_FEATURES.index(SHOWN_POSITION)


@cache
def _churn_positions() -> list[int]:
    # The churn model reads customer columns only, and every row holds the same customer, so its
    # row is the first ranker row restricted to those columns.
    return [RANKER_FEATURES.index(name) for name in CHURN_FEATURES]


def candidate_ranker_matrix(
    features: Mapping[str, Any], segment: str, offers: np.ndarray, fits: np.ndarray
) -> np.ndarray:
    """The ranker matrix, one row per candidate: customer features (account and profile),
    segment, offer attributes (``OFFER_ATTRIBUTES`` columns) and plan fit
    (``PLAN_FIT_OUTPUTS`` columns); equal to ``ranker_matrix`` of the same frame.
    """
    customer, at_customer, at_offer, at_fit = _layout()
    rows = np.empty((len(offers), len(RANKER_FEATURES)))
    rows[:, at_customer] = [as_float(features.get(name)) for name in customer]
    rows[:, at_offer] = offers
    rows[:, at_fit] = fits
    # The derived columns of training.model_inputs.add_derived_columns.
    rows[:, _segment_position()] = float(segment == "business")
    fee_at, new_price_at, discount_at = _discount_positions()
    rows[:, discount_at] = new_customer_discount_sek(offers[:, fee_at], offers[:, new_price_at])
    rows[:, _position_at()] = SERVED_POSITION
    return rows


def score(scorer: Scorer, rows: np.ndarray) -> Scores:
    """Acceptance per candidate row and the customer's churn risk."""
    (scores,) = score_many(scorer, [rows])
    return scores


def score_many(scorer: Scorer, matrices: Sequence[np.ndarray]) -> list[Scores]:
    """:func:`score` for many decisions' candidate matrices (each non-empty): one acceptance
    call for all their rows and one churn call for all their customers, since a model call's
    fixed cost is most of what a decision's few rows cost. LightGBM scores each row on its own,
    so every decision gets the numbers it would get alone."""
    if not matrices:
        return []
    acceptance = np.clip(np.asarray(scorer.acceptance(np.vstack(matrices)), dtype=float), 0.0, 1.0)
    churn = np.clip(
        np.asarray(
            scorer.churn_risks(np.vstack([rows[:1, _churn_positions()] for rows in matrices])),
            dtype=float,
        ),
        0.0,
        1.0,
    )
    ends = np.cumsum([len(rows) for rows in matrices])
    return [
        Scores(rows=rows, acceptance=acceptance[end - len(rows) : end], churn_risk=float(risk))
        for rows, end, risk in zip(matrices, ends, churn, strict=True)
    ]


def top_contributions(
    scorer: Scorer, rows: np.ndarray, top: int = TOP_CONTRIBUTIONS
) -> list[list[Contribution]]:
    """The ``top`` features by absolute contribution, for each row (the shown offers only)."""
    if len(rows) == 0:
        return []
    contributions = np.asarray(scorer.contributions(rows), dtype=float)[:, : len(RANKER_FEATURES)]
    # Stable sort: equal shares keep the feature order, so the output is deterministic. Sorted
    # for all rows in one call, then read as Python numbers (numpy's per-element access costs
    # more than the rest of the choice).
    orders = np.argsort(-np.abs(contributions), axis=1, kind="stable").tolist()
    return [
        _top(row, values, order, top)
        for row, values, order in zip(
            np.asarray(rows, dtype=float).tolist(), contributions.tolist(), orders, strict=True
        )
    ]


def top_contributions_many(
    scorer: Scorer, matrices: Sequence[np.ndarray], top: int = TOP_CONTRIBUTIONS
) -> list[list[list[Contribution]]]:
    """:func:`top_contributions` for many decisions' shown rows, in one model call."""
    explained = top_contributions(scorer, np.vstack(matrices), top) if matrices else []
    ends = np.cumsum([len(rows) for rows in matrices])
    return [explained[end - len(rows) : end] for rows, end in zip(matrices, ends, strict=True)]


def _top(row: list[float], values: list[float], order: list[int], top: int) -> list[Contribution]:
    # The place on the invoice is the same for every served offer: it explains nothing
    # about the customer.
    position = _position_at()
    chosen: list[int] = []
    for j in order:
        if values[j] != 0.0 and j != position:
            chosen.append(j)
            if len(chosen) == top:
                break
    return [
        Contribution(
            feature=RANKER_FEATURES[j],
            value=None
            if math.isnan(row[j]) or RANKER_FEATURES[j] in _VALUES_NOT_SHOWN
            else round(row[j], 4),
            contribution=round(values[j], 4),
        )
        for j in chosen
    ]
