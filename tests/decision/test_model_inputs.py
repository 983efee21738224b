"""What a decision keeps of the customer inputs the model scored, for input monitoring: only for
customers the model may score, and age and satisfaction in bands only."""

from __future__ import annotations

from typing import Any

import pytest

from serving.decision.engine import Decision, decide
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    consent,
    heavy_user,
    make_catalog,
    request,
)
from training.model_inputs import MONITORED_INPUTS

CATALOG = make_catalog()


def _model_decision() -> Decision:
    return decide(
        request(),
        FakeFeatureSource(account_row=heavy_user()),
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, {"PLAN_30GB": 0.6, "ADDON_DATA_10GB": 0.3}),
        recently_declined=frozenset(),
    )


def test_a_model_decision_carries_the_customer_inputs_it_scored_in_bands_where_personal() -> None:
    decision = _model_decision()
    inputs = decision.model_inputs
    assert inputs is not None
    assert set(inputs) == set(MONITORED_INPUTS)
    # heavy_user: 9 GB in the newest month on a 5 GB plan at 179 kr; the profile's age 46.
    assert (inputs["data_gb_m1"], inputs["current_data_gb"]) == (9.0, 5.0)
    assert inputs["current_monthly_fee_sek"] == 179.0
    assert (inputs["age_band"], inputs["satisfaction_band"]) == ("45-64", "neutral")
    assert "age" not in inputs and "satisfaction" not in inputs
    assert 46 not in inputs.values()


@pytest.mark.parametrize(
    ("consent_row", "policy"),
    [
        (consent(profiling=False), "non_personalised"),
        (consent(birth_year=2010), "non_personalised"),
        (consent(marketing=False), "none"),
    ],
)
def test_no_inputs_are_kept_for_a_customer_the_model_may_not_score(
    consent_row: dict[str, Any], policy: str
) -> None:
    decision = decide(
        request(),
        FakeFeatureSource(consent_row=consent_row, account_row=heavy_user()),
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, {"PLAN_30GB": 0.6}),
        recently_declined=frozenset(),
    )
    assert decision.policy == policy
    assert decision.model_inputs is None


def test_no_inputs_are_kept_when_the_rules_decide() -> None:
    decision = decide(
        request(),
        FakeFeatureSource(account_row=heavy_user()),
        CATALOG,
        policy="model",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert (decision.policy, decision.model_inputs) == ("rules", None)
