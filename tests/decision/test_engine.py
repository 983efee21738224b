"""The whole decision: shapes, determinism, policy lowering, degraded paths."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from serving.decision.engine import Decision, decide, fallback_decision
from serving.decision.inputs import ExperimentAssignment, UnknownCustomerError
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    UnknownSource,
    account,
    consent,
    heavy_user,
    make_catalog,
    request,
)

CATALOG = make_catalog()
RESPONSE_KEYS = {
    "invoice_id",
    "customer_id",
    "policy",
    "model_version",
    "experiment",
    "consent",
    "offers",
    "usage_summary",
    "degraded",
}
OFFER_KEYS = {
    "offer_id",
    "rank",
    "kind",
    "title",
    "monthly_fee_sek",
    "acceptance_probability",
    "expected_value_sek",
    "customer_saving_sek_per_month",
    "personalised",
    "reasons",
    "contributions",
}
EXPERIMENT = ExperimentAssignment(key="ranker-vs-rules", variant="treatment")


def _model_decision(**kw: Any) -> Decision:
    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
    scorer = FakeScorer(CATALOG, {"PLAN_30GB": 0.6, "ADDON_DATA_10GB": 0.3})
    return decide(
        request(**kw),
        source,
        CATALOG,
        policy="model",
        scorer=scorer,
        recently_declined=frozenset(),
        experiment=EXPERIMENT,
    )


def test_public_dict_has_exactly_the_contract_shape() -> None:
    public = _model_decision().to_public_dict()
    assert set(public) == RESPONSE_KEYS
    assert public["policy"] == "model"
    assert public["model_version"] == "offer-ranker/7"
    assert public["experiment"] == {"key": "ranker-vs-rules", "variant": "treatment"}
    assert public["consent"] == {"marketing": True, "profiling": True, "usage_insights": True}
    assert public["degraded"] is None
    assert [o["rank"] for o in public["offers"]] == [1, 2, 3]
    for item in public["offers"]:
        assert set(item) == OFFER_KEYS
        assert item["reasons"] and all(set(r) == {"code", "text"} for r in item["reasons"])
        assert all(set(c) == {"feature", "value", "contribution"} for c in item["contributions"])
    json.dumps(public, allow_nan=False)  # plain JSON, no NaN


def test_log_dict_keeps_scores_propensities_and_consent() -> None:
    log = _model_decision().to_log_dict()
    assert set(log) >= RESPONSE_KEYS
    assert all(o["propensity"] == 1.0 for o in log["offers"])
    assert log["requested_policy"] == "model"
    assert log["consent_used"] == {
        "marketing": True,
        "profiling": True,
        "usage_insights": True,
        "objected": False,
        "adult": True,
        "segment": "consumer",
    }
    assert log["churn_risk"] == 0.2
    candidates = {c["offer_id"]: c for c in log["candidates"]}
    assert len(candidates) == len(CATALOG.offers)
    assert candidates["PLAN_30GB"]["acceptance_probability"] == 0.6
    assert candidates["PLAN_5GB"]["blocked_by"] == "current_plan"
    assert candidates["ADDON_EU_ROAMING"]["blocked_by"] == "upgrade_not_justified"
    # A blocked offer's record holds what was known of it, no empty figures.
    assert candidates["PLAN_5GB"] == {
        "offer_id": "PLAN_5GB",
        "kind": "plan",
        "blocked_by": "current_plan",
    }
    shown = [c["offer_id"] for c in sorted(log["candidates"], key=lambda c: c.get("rank") or 99)][
        :3
    ]
    assert shown == [o["offer_id"] for o in log["offers"]]
    json.dumps(log, allow_nan=False)


def test_the_same_inputs_give_the_same_decision() -> None:
    first, second = _model_decision(), _model_decision()
    assert first == second
    assert first.to_log_dict() == second.to_log_dict()


def test_unknown_customer_reads_nothing_else() -> None:
    source = UnknownSource()
    with pytest.raises(UnknownCustomerError):
        decide(
            request(), source, CATALOG, policy="model", scorer=None, recently_declined=frozenset()
        )
    assert source.calls == ["consent"]


@pytest.mark.parametrize(
    ("requested", "degraded", "policy"),
    [
        # No model registered yet: the rules are the policy, nothing is degraded.
        ("model", None, "rules"),
        ("model:9", None, "rules"),
        # A model that should be there is not: the rules choose, the answer says a part was down.
        ("model", "model_unavailable", "fallback"),
        ("model:9", "model_unavailable", "fallback"),
    ],
)
def test_model_request_without_a_scorer_is_decided_by_rules(
    requested: str, degraded: str | None, policy: str
) -> None:
    decision = decide(
        request(),
        FakeFeatureSource(account_row=heavy_user()),
        CATALOG,
        policy=requested,
        scorer=None,
        recently_declined=frozenset(),
        degraded=degraded,
    )
    assert decision.policy == policy
    assert decision.degraded == degraded
    assert decision.model_version is None
    rules = decide(
        request(),
        FakeFeatureSource(account_row=heavy_user()),
        CATALOG,
        policy="rules",
        scorer=None,
        recently_declined=frozenset(),
    )
    # The offers are the rules' own, whatever the policy is called.
    assert decision.offers == rules.offers
    assert decision.offers[0].offer_id == "PLAN_15GB"
    assert all(o.acceptance_probability is None for o in decision.offers)


def test_consent_lowering_is_not_a_fallback() -> None:
    # Without profiling consent the model could not have been used anyway.
    decision = decide(
        request(),
        FakeFeatureSource(consent_row=consent(profiling=False), account_row=heavy_user()),
        CATALOG,
        policy="model",
        scorer=None,
        recently_declined=frozenset(),
        degraded="model_unavailable",
    )
    assert decision.policy == "non_personalised"


def test_challenger_policy_reports_the_challenger_version() -> None:
    decision = decide(
        request(),
        FakeFeatureSource(account_row=heavy_user()),
        CATALOG,
        policy="model:9",
        scorer=FakeScorer(CATALOG, {}, model_version="offer-ranker/9"),
        recently_declined=frozenset(),
    )
    assert (decision.policy, decision.model_version) == ("model", "offer-ranker/9")
    assert decision.requested_policy == "model:9"


def test_holdout_shows_nothing_but_the_summary() -> None:
    source = FakeFeatureSource(account_row=heavy_user())
    decision = decide(
        request(),
        source,
        CATALOG,
        policy="holdout",
        scorer=FakeScorer(CATALOG, {}),
        recently_declined=frozenset(),
        experiment=ExperimentAssignment("ranker-vs-rules", "control"),
    )
    assert decision.policy == "holdout" and decision.offers == ()
    assert decision.usage_summary is not None
    assert "profile" not in source.calls


def test_rules_or_non_personalised_on_request_even_with_full_consent() -> None:
    for requested, expected in (("rules", "rules"), ("non_personalised", "non_personalised")):
        source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
        decision = decide(
            request(),
            source,
            CATALOG,
            policy=requested,
            scorer=FakeScorer(CATALOG, {}),
            recently_declined=frozenset(),
        )
        assert decision.policy == expected
        assert "profile" not in source.calls
        assert all(o.contributions == () for o in decision.offers)


def test_a_failing_model_falls_back_to_rules(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeScorer):
        def acceptance(self, rows: np.ndarray) -> np.ndarray:
            raise RuntimeError("model expects 90 features, got data_gb_avg_3m=9.0")

    with caplog.at_level(logging.ERROR, logger="serving.decision"):
        decision = decide(
            request(),
            FakeFeatureSource(account_row=heavy_user()),
            CATALOG,
            policy="model",
            scorer=Broken(CATALOG, {}),
            recently_declined=frozenset(),
        )
    assert (decision.policy, decision.degraded, decision.model_version) == (
        "fallback",
        "model_error",
        None,
    )
    assert decision.offers[0].offer_id == "PLAN_15GB"
    assert all(o.acceptance_probability is None for o in decision.offers)
    # The error type, and no identifier: logs carry no invoice or customer id.
    assert "RuntimeError" in caplog.text and "INV-2026-11-0001" not in caplog.text
    assert "9.0" not in caplog.text  # the model's message may quote the customer's features


def test_failing_explanations_keep_the_models_offers_without_contributions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unexplained(FakeScorer):
        def contributions(self, rows: np.ndarray) -> np.ndarray:
            raise ValueError(f"cannot explain row {rows[0].tolist()}")

    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
    acceptance = {"PLAN_30GB": 0.6, "ADDON_DATA_10GB": 0.3}
    with caplog.at_level(logging.ERROR, logger="serving.decision"):
        decision = decide(
            request(),
            source,
            CATALOG,
            policy="model",
            scorer=Unexplained(CATALOG, acceptance),
            recently_declined=frozenset(),
        )
    explained = _model_decision()
    # The model scored and chose: same offers and scores, only the contributions are missing.
    assert (decision.policy, decision.degraded, decision.model_version) == (
        "model",
        "model_error",
        "offer-ranker/7",
    )
    assert [o.offer_id for o in decision.offers] == [o.offer_id for o in explained.offers]
    assert [o.acceptance_probability for o in decision.offers] == [
        o.acceptance_probability for o in explained.offers
    ]
    assert all(o.contributions == () and o.reasons for o in decision.offers)
    assert "ValueError" in caplog.text and "cannot explain" not in caplog.text


def test_max_offers_zero_explains_nothing() -> None:
    scorer = FakeScorer(CATALOG, {})
    decision = decide(
        request(max_offers=0),
        FakeFeatureSource(account_row=heavy_user()),
        CATALOG,
        policy="model",
        scorer=scorer,
        recently_declined=frozenset(),
    )
    assert decision.offers == ()
    assert not [call for call in scorer.calls if call[0] == "contributions"]
    assert decision.usage_summary is not None


def test_titles_follow_the_locale() -> None:
    english, swedish = _model_decision(locale="en"), _model_decision(locale="sv")
    # The likeliest saving leads: 30 GB at 60 % acceptance saves the heavy user 16 kr a month.
    assert english.offers[0].offer_id == swedish.offers[0].offer_id == "PLAN_30GB"
    assert (english.offers[0].title, swedish.offers[0].title) == ("Mobile 30 GB", "Mobil 30 GB")


def test_fallback_decision_when_features_are_down() -> None:
    decision = fallback_decision(
        request(), requested_policy="model", degraded="feature_store_unavailable"
    )
    public = decision.to_public_dict()
    assert set(public) == RESPONSE_KEYS
    assert public["policy"] == "fallback"
    assert public["offers"] == [] and public["usage_summary"] is None
    assert public["consent"] == {"marketing": False, "profiling": False, "usage_insights": False}
    assert public["degraded"] == "feature_store_unavailable"


def test_objection_means_no_offers_but_a_summary() -> None:
    source = FakeFeatureSource(consent_row=consent(objected=True), account_row=heavy_user())
    decision = decide(
        request(),
        source,
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, {}),
        recently_declined=frozenset(),
    )
    assert decision.policy == "none" and decision.offers == ()
    assert decision.usage_summary is not None
    assert decision.usage_summary["detail_level"] == "detailed"


def test_feature_values_from_frames_are_read_alike() -> None:
    """A batch source may hand over numpy numbers, pandas NA and timestamps."""
    from_frames = {
        key: (np.float64(value) if isinstance(value, float) and not np.isnan(value) else value)
        for key, value in heavy_user(invoice_fee_last_sek=29.0).items()
    }
    from_frames.update(unpaid_reminders=pd.NA, binding_end_date=pd.Timestamp("2027-01-31"))
    row = {**consent(), "consent_profiling": np.int64(1), "birth_year": np.int64(1980)}
    decision = decide(
        request(),
        FakeFeatureSource(consent_row=row, account_row=from_frames),
        CATALOG,
        policy="rules",
        scorer=None,
        recently_declined=frozenset(),
    )
    plain = decide(
        request(),
        FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0)),
        CATALOG,
        policy="rules",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert decision.offers == plain.offers
    assert decision.usage_summary is not None
    assert decision.usage_summary["binding_end_date"] == "2027-01-31"


def _non_personalised_offers(scorer: FakeScorer | None, **account_overrides: Any) -> list[str]:
    decision = decide(
        request(max_offers=3),
        FakeFeatureSource(
            consent_row=consent(profiling=False),
            account_row=account(invoice_fee_last_sek=29.0, **account_overrides),
        ),
        CATALOG,
        policy="model",
        scorer=scorer,
        recently_declined=frozenset(),
    )
    assert decision.policy == "non_personalised"
    assert all(o.acceptance_probability is None and o.contributions == () for o in decision.offers)
    return [o.offer_id for o in decision.offers]


def test_non_personalised_offers_follow_what_the_segment_accepted_most() -> None:
    rates = {
        "consumer": {"PAY_AUTOGIRO": 0.31, "LOYALTY_NEW_PRICE": 0.12, "PAY_EINVOICE": 0.20},
        "business": {"LOYALTY_NEW_PRICE": 0.40},
    }
    scorer = FakeScorer(CATALOG, {}, segment_rates=rates)
    # Without the segment's figures (no model yet, or one registered before them): catalog order.
    catalog_order = ["LOYALTY_NEW_PRICE", "PAY_EINVOICE", "PAY_AUTOGIRO"]
    assert _non_personalised_offers(None) == catalog_order
    assert _non_personalised_offers(FakeScorer(CATALOG, {})) == catalog_order
    assert _non_personalised_offers(scorer) == ["PAY_AUTOGIRO", "PAY_EINVOICE", "LOYALTY_NEW_PRICE"]
    # The same order for everyone in the segment, whatever their usage; the cut keeps its head.
    assert _non_personalised_offers(scorer, data_gb_avg_3m=1.0, data_gb_max_3m=1.5) == [
        "PAY_AUTOGIRO",
        "PAY_EINVOICE",
        "LOYALTY_NEW_PRICE",
    ]
