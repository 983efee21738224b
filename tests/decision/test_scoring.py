"""The served model matrix equals training's ranker_matrix; contributions for shown offers only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.plan_fit import PLAN_FIT_OUTPUTS
from features.views import OFFER_ATTRIBUTES
from serving.decision.candidates import offer_matrix, plan_fit_matrix
from serving.decision.engine import decide
from serving.decision.inputs import Account
from serving.decision.scoring import candidate_ranker_matrix, top_contributions
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    account,
    heavy_user,
    make_catalog,
    profile,
    request,
)
from training.model_inputs import (
    CHURN_FEATURES,
    RANKER_FEATURES,
    SHOWN_POSITION,
    churn_matrix,
    ranker_matrix,
)

CATALOG = make_catalog()


def _training_frame(
    features: dict[str, Any], segment: str, offers: np.ndarray, fits: np.ndarray
) -> pd.DataFrame:
    """The frame training builds: customer features, segment, offer attributes, plan fit."""
    frame = pd.DataFrame([features] * len(offers))
    frame["segment"] = segment
    frame[list(OFFER_ATTRIBUTES)] = offers
    frame[list(PLAN_FIT_OUTPUTS)] = fits
    return frame


@pytest.mark.parametrize(
    ("features", "segment"),
    [
        ({**account(), **profile()}, "consumer"),
        ({**heavy_user(invoice_fee_last_sek=29.0), **profile(satisfaction=None)}, "business"),
        ({**account(current_data_gb=math.nan, data_gb_trend_6m=None), **profile()}, "consumer"),
    ],
)
def test_ranker_rows_equal_training_ranker_matrix(features: dict[str, Any], segment: str) -> None:
    offers = offer_matrix(CATALOG.offers)
    fits = plan_fit_matrix(Account.from_features(features), offers)
    served = candidate_ranker_matrix(features, segment, offers, fits)
    trained = ranker_matrix(_training_frame(features, segment, offers, fits))
    np.testing.assert_array_equal(served, trained)
    # The churn row is the customer part of any ranker row.
    churn_row = served[0, [RANKER_FEATURES.index(name) for name in CHURN_FEATURES]]
    expected = churn_matrix(_training_frame(features, segment, offers, fits))[0]
    np.testing.assert_array_equal(churn_row, expected)
    # Every served candidate is scored as if shown first.
    assert (served[:, RANKER_FEATURES.index(SHOWN_POSITION)] == 1.0).all()


def test_training_reads_the_logged_place_on_the_invoice() -> None:
    features = {**account(), **profile()}
    offers = offer_matrix(CATALOG.offers)[:3]
    fits = plan_fit_matrix(Account.from_features(features), offers)
    frame = _training_frame(features, "consumer", offers, fits)
    frame["rank"] = [1, 2, 3]
    column = ranker_matrix(frame)[:, RANKER_FEATURES.index(SHOWN_POSITION)]
    assert list(column) == [1.0, 2.0, 3.0]


class FixedContributions:
    """A scorer whose contributions are the same fixed values for every row; the bias column
    (last) is 5.0, which is never a feature."""

    model_version = "m"

    def __init__(self, by_feature: dict[str, float]) -> None:
        self.by_feature = by_feature

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows))

    def churn_risks(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows))

    def segment_acceptance(self, segment: str) -> dict[str, float]:
        return {}

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        values = np.zeros((len(rows), len(RANKER_FEATURES) + 1))
        for feature, value in self.by_feature.items():
            values[:, RANKER_FEATURES.index(feature)] = value
        values[:, -1] = 5.0
        return values


def test_top_contributions_by_absolute_value() -> None:
    fixed = FixedContributions(
        {
            "data_gb_avg_3m": 0.41,
            "fit_saving_sek_per_month": -0.9,
            "tenure_months": 0.05,
            # The same for every served offer, so it explains nothing and is never listed.
            SHOWN_POSITION: 3.0,
        }
    )

    rows = np.full((2, len(RANKER_FEATURES)), 2.0)
    rows[0, RANKER_FEATURES.index("data_gb_avg_3m")] = 14.2
    rows[0, RANKER_FEATURES.index("tenure_months")] = math.nan
    result = top_contributions(fixed, rows, top=2)
    assert [(c.feature, c.value, c.contribution) for c in result[0]] == [
        ("fit_saving_sek_per_month", 2.0, -0.9),
        ("data_gb_avg_3m", 14.2, 0.41),
    ]
    full = top_contributions(fixed, rows)
    assert full[0][2].feature == "tenure_months" and full[0][2].value is None
    assert len(full[0]) == 3  # zero contributions are left out


def test_contributions_are_computed_for_shown_offers_only() -> None:
    scorer = FakeScorer(CATALOG, {"PLAN_30GB": 0.6})
    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
    decision = decide(
        request(max_offers=2),
        source,
        CATALOG,
        policy="model",
        scorer=scorer,
        recently_declined=frozenset(),
    )
    assert ("acceptance", 12) in scorer.calls  # every eligible candidate scored
    assert ("contributions", 2) in scorer.calls  # two shown, two explained
    assert [len(o.contributions) for o in decision.offers] == [5, 5]
    top = decision.offers[0].contributions
    assert [abs(c.contribution) for c in top] == sorted(
        (abs(c.contribution) for c in top), reverse=True
    )


def test_age_and_satisfaction_weigh_without_their_values() -> None:
    scorer = FixedContributions({"age": 0.8, "satisfaction": -0.5, "tenure_months": 0.1})
    rows = np.full((1, len(RANKER_FEATURES)), 2.0)
    rows[0, RANKER_FEATURES.index("age")] = 73.0
    rows[0, RANKER_FEATURES.index("satisfaction")] = 1.5
    rows[0, RANKER_FEATURES.index("tenure_months")] = 48.0
    result = top_contributions(scorer, rows)[0]
    assert [(c.feature, c.value, c.contribution) for c in result] == [
        ("age", None, 0.8),
        ("satisfaction", None, -0.5),
        ("tenure_months", 48.0, 0.1),
    ]


def test_the_offers_identity_weighs_without_its_code() -> None:
    scorer = FixedContributions({"offer_identity_code": 0.6, "offer_monthly_fee_sek": -0.2})
    rows = np.full((1, len(RANKER_FEATURES)), 2.0)
    rows[0, RANKER_FEATURES.index("offer_identity_code")] = 12_940_565.0
    rows[0, RANKER_FEATURES.index("offer_monthly_fee_sek")] = 299.0
    result = top_contributions(scorer, rows)[0]
    assert [(c.feature, c.value, c.contribution) for c in result] == [
        ("offer_identity_code", None, 0.6),
        ("offer_monthly_fee_sek", 299.0, -0.2),
    ]
