"""Evaluation against baselines, per slice and off-policy, on synthetic validation frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.factories.training import ranker_frame
from training.evaluate import (
    MODEL,
    POPULARITY,
    RULES,
    PopularityBaseline,
    RulesBaseline,
    churn_markdown,
    evaluate_churn,
    evaluate_ranker,
    off_policy_value,
    ranker_markdown,
    segment_offer_acceptance,
    to_json,
)


def figure(value: float | None) -> float:
    assert value is not None, "the metric is undefined on these rows"
    return value


@pytest.fixture(scope="module")
def validation() -> pd.DataFrame:
    return ranker_frame(3000, seed=5)


def test_the_true_probability_beats_both_baselines(validation: pd.DataFrame) -> None:
    train = ranker_frame(3000, seed=6)
    popularity = PopularityBaseline.fit(train["offer_id"], train["label"])
    rules = RulesBaseline.fit(train["fit_saving_sek_per_month"], train["label"])
    probabilities = {
        MODEL: validation["true_probability"].to_numpy(),
        POPULARITY: popularity.predict(validation["offer_id"]),
        RULES: rules.predict(validation["fit_saving_sek_per_month"]),
    }
    evaluation = evaluate_ranker(
        validation, probabilities, {RULES: rules.score(validation["fit_saving_sek_per_month"])}
    )
    overall = evaluation.overall
    ndcg = {scorer: figure(overall[scorer]["ndcg_at_3"]) for scorer in (MODEL, RULES, POPULARITY)}
    assert ndcg[MODEL] > ndcg[RULES] > ndcg[POPULARITY]
    assert figure(overall[MODEL]["auc"]) > figure(overall[POPULARITY]["auc"])
    assert figure(overall[MODEL]["ece"]) < 0.03  # the truth is calibrated
    assert evaluation.decisions == 3000
    assert evaluation.rows == 9000
    assert set(evaluation.per_slice) >= {"tenure_under_2y", "age_18_29", "consent_profiling"}
    assert evaluation.per_slice["age_18_29"]["rows"] == int(validation["age"].between(18, 29).sum())
    assert {row["offer_id"] for row in evaluation.per_offer} == set(validation["offer_id"])
    flat = evaluation.flat_metrics()
    assert flat["val_ndcg_at_3"] == overall[MODEL]["ndcg_at_3"]
    assert "val_popularity_ndcg_at_3" in flat
    assert "val_slice_tenure_under_2y_ndcg_at_3" in flat
    report = ranker_markdown(evaluation, {"feature_service": "offer_ranker_v1"})
    assert "| model |" in report and "age_18_29" in report
    parsed = json.loads(to_json(evaluation.as_dict()))
    assert parsed["overall"]["model"]["ndcg_at_3"] == pytest.approx(overall[MODEL]["ndcg_at_3"])


def test_popularity_baseline_shrinks_rare_offers_towards_the_overall_rate() -> None:
    offers = pd.Series(["A"] * 100 + ["B"] * 2)
    labels = np.r_[np.ones(50), np.zeros(50), np.ones(2)]
    baseline = PopularityBaseline.fit(offers, labels, prior_rows=20)
    overall = 52 / 102
    assert baseline.rates["A"] == pytest.approx((50 + 20 * overall) / 120)
    assert baseline.rates["B"] == pytest.approx((2 + 20 * overall) / 22)
    assert baseline.predict(pd.Series(["C"]))[0] == pytest.approx(overall)


def test_off_policy_value_against_hand_computed_weights() -> None:
    # d1: logged first offer X (propensity 0.5) accepted; d2: logged first offer Y (0.25) ignored.
    logged = pd.DataFrame(
        {
            "decision_id": ["d1", "d1", "d2", "d2"],
            "offer_id": ["X", "Z", "Y", "X"],
            "rank": [1, 2, 1, 2],
            "propensity": [0.5, 0.3, 0.25, 0.2],
            "label": [1.0, 0.0, 0.0, 1.0],
        }
    )
    candidates = pd.DataFrame(
        {
            "decision_id": ["d1", "d1", "d1", "d2", "d2", "d2"],
            "offer_id": ["X", "Y", "Z", "X", "Y", "Z"],
            "likes_x": [0.9, 0.1, 0.2, 0.9, 0.1, 0.2],  # X first in both decisions
            "likes_y": [0.1, 0.9, 0.2, 0.1, 0.9, 0.2],  # Y first in both decisions
            "tie": [0.5, 0.5, 0.1, 0.5, 0.5, 0.1],  # X and Y tied first
        }
    )
    value = off_policy_value(
        logged, candidates, {"x": "likes_x", "y": "likes_y", "tie": "tie"}, "test"
    )
    assert value.logging_policy_value == pytest.approx(0.5)
    assert value.decisions == 2
    # Policy x takes the logged action only in d1: IPS = (1 / 0.5 + 0) / 2.
    assert value.estimates["x"]["ips"] == pytest.approx(1.0)
    assert value.estimates["x"]["snips"] == pytest.approx(1.0)
    # Policy y agrees only in d2, where the outcome was nothing.
    assert value.estimates["y"]["ips"] == pytest.approx(0.0)
    assert value.estimates["y"]["snips"] == pytest.approx(0.0)
    # Ties share the choice: weights 0.5 / 0.5 and 0.5 / 0.25.
    assert value.estimates["tie"]["ips"] == pytest.approx((1.0 * 1.0 + 0.0) / 2)
    assert value.estimates["tie"]["snips"] == pytest.approx(1.0 / (1.0 + 2.0))
    assert value.estimates["tie"]["agreement_with_logging"] == pytest.approx(0.5)


def test_ips_is_unbiased_for_a_known_logging_policy() -> None:
    # Three offers with acceptance 0.1, 0.3, 0.6, logged uniformly at random (propensity 1/3).
    rng = np.random.default_rng(4)
    decisions = 60000
    truth = np.array([0.1, 0.3, 0.6])
    shown = rng.integers(0, 3, decisions)
    logged = pd.DataFrame(
        {
            "decision_id": np.arange(decisions),
            "offer_id": shown,
            "rank": 1,
            "propensity": 1 / 3,
            "label": (rng.random(decisions) < truth[shown]).astype(float),
        }
    )
    candidates = pd.DataFrame(
        {
            "decision_id": np.repeat(np.arange(decisions), 3),
            "offer_id": np.tile(np.arange(3), decisions),
            "best": np.tile(truth, decisions),
            "worst": np.tile(-truth, decisions),
        }
    )
    value = off_policy_value(logged, candidates, {"best": "best", "worst": "worst"})
    assert value.logging_policy_value == pytest.approx(truth.mean(), abs=0.01)
    assert value.estimates["best"]["ips"] == pytest.approx(0.6, abs=0.02)
    assert value.estimates["best"]["snips"] == pytest.approx(0.6, abs=0.02)
    assert value.estimates["worst"]["snips"] == pytest.approx(0.1, abs=0.02)


def test_churn_evaluation_reports_auc_and_top_decile_lift() -> None:
    rng = np.random.default_rng(0)
    rows = 5000
    frame = pd.DataFrame(
        {
            "tenure_months": rng.integers(0, 100, rows),
            "age": rng.integers(18, 80, rows),
            "consent_profiling": rng.integers(0, 2, rows),
            "consent_usage_insights": rng.integers(0, 2, rows),
        }
    )
    risk = 1.0 / (1.0 + np.exp(-(-3.0 + 2.0 * (frame["tenure_months"] < 24))))
    frame["label"] = (rng.random(rows) < risk).astype(float)
    evaluation = evaluate_churn(frame, np.asarray(risk))
    assert evaluation.overall["auc"] == pytest.approx(0.70, abs=0.06)
    assert figure(evaluation.overall["top_decile_lift"]) > 1.5
    assert figure(evaluation.overall["ece"]) < 0.03
    assert evaluation.per_slice["tenure_under_2y"]["churn_rate"] > evaluation.churn_rate
    assert "val_auc" in evaluation.flat_metrics()
    assert "top-decile lift" in churn_markdown(evaluation, {})


def test_undefined_metrics_are_reported_as_missing_not_raised() -> None:
    frame = ranker_frame(40, seed=1)
    frame["label"] = 0.0
    p = np.full(len(frame), 0.1)
    evaluation = evaluate_ranker(frame, {MODEL: p, POPULARITY: p, RULES: p})
    assert evaluation.overall[MODEL]["ndcg_at_3"] is None
    assert evaluation.overall[MODEL]["auc"] is None
    assert evaluation.overall[MODEL]["log_loss"] == pytest.approx(-np.log(0.9))


def test_segment_offer_acceptance_counts_first_places_per_segment_shrunk_to_the_offer() -> None:
    rows = pd.DataFrame(
        {
            "offer_id": ["A"] * 10 + ["B"] * 10 + ["A"] * 4 + ["A"] * 6,
            "label": [1] * 5 + [0] * 5 + [1] * 1 + [0] * 9 + [1] * 4 + [1] * 6,
            "segment": ["consumer"] * 20 + ["business"] * 4 + ["consumer"] * 6,
            "rank": [1] * 24 + [2] * 6,  # the last six were shown second: left out
        }
    )
    rates = segment_offer_acceptance(rows, prior_rows=2)
    overall = 10 / 24  # 10 accepted of 24 first places
    offer_a = (9 + 2 * overall) / (14 + 2)  # A: 9 of 14 first places
    offer_b = (1 + 2 * overall) / (10 + 2)
    assert rates["consumer"]["A"] == pytest.approx((5 + 2 * offer_a) / (10 + 2), abs=1e-6)
    assert rates["consumer"]["B"] == pytest.approx((1 + 2 * offer_b) / (10 + 2), abs=1e-6)
    assert rates["business"] == {"A": pytest.approx((4 + 2 * offer_a) / (4 + 2), abs=1e-6)}
    # Segment codes as the model reads them give the same figures.
    coded = rows.drop(columns="segment").assign(
        segment_is_business=(rows["segment"] == "business").astype(float)
    )
    assert segment_offer_acceptance(coded, prior_rows=2) == rates
