"""Model fitting on synthetic frames: objectives, budgets, calibration and explanation cost."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories.training import churn_fit_set, ranker_fit_set, ranker_frame
from training.calibration import (
    Calibrator,
    calibrate,
    choose_calibrator,
    fit_isotonic,
    fit_platt,
)
from training.metrics import expected_calibration_error, ndcg_at_k, roc_auc
from training.model import (
    Candidate,
    FitSet,
    TreeBudget,
    choose_candidate,
    explain_cost,
    fit_churn,
    fit_ranker,
    measure_explain_ms,
)
from training.model_inputs import RANKER_FEATURES

SMALL = TreeBudget("small", num_leaves=7, max_depth=3, max_trees=60, learning_rate=0.1)
MEDIUM = TreeBudget("medium", num_leaves=15, max_depth=5, max_trees=60, learning_rate=0.1)


@pytest.fixture(scope="module")
def ranker_sets() -> tuple[FitSet, FitSet, np.ndarray]:
    train = ranker_frame(4000, seed=1)
    tune = ranker_frame(1500, seed=2)
    return ranker_fit_set(train), ranker_fit_set(tune), tune["true_probability"].to_numpy()


def test_ranker_learns_the_hidden_rule_and_keeps_feature_names(ranker_sets) -> None:
    train, tune, truth = ranker_sets
    fitted = fit_ranker(train, tune, budgets=(SMALL, MEDIUM))
    assert fitted.booster.feature_name() == RANKER_FEATURES
    assert {c.objective for c in fitted.candidates} == {"binary", "lambdarank"}
    assert len(fitted.candidates) == 4
    probability = fitted.predict_proba(tune.features)
    model_ndcg = ndcg_at_k(tune.labels, probability, tune.groups)
    oracle_ndcg = ndcg_at_k(tune.labels, truth, tune.groups)
    random_ndcg = ndcg_at_k(tune.labels, np.random.default_rng(0).random(len(truth)), tune.groups)
    assert model_ndcg > random_ndcg + 0.05
    assert model_ndcg > oracle_ndcg - 0.05
    assert expected_calibration_error(tune.labels, probability) < 0.05
    assert fitted.chosen.trees <= SMALL.max_trees
    assert fitted.chosen.explain_ms > 0
    tradeoff = fitted.tradeoff()
    assert sum(row["chosen"] for row in tradeoff) == 1
    assert {"pred_contrib_ms_3_rows", "tune_ndcg_at_3", "trees"} <= set(tradeoff[0])


def test_lambdarank_needs_and_gets_a_calibrator(ranker_sets) -> None:
    train, tune, _ = ranker_sets
    fitted = fit_ranker(train, tune, objectives=("lambdarank",), budgets=(SMALL,))
    assert fitted.chosen.objective == "lambdarank"
    assert fitted.calibrator.kind in {"platt", "isotonic"}
    probability = fitted.predict_proba(tune.features)
    assert expected_calibration_error(tune.labels, probability) < 0.05


def test_churn_model_ranks_churners_first() -> None:
    fitted = fit_churn(churn_fit_set(6000, seed=1), churn_fit_set(3000, seed=2), budgets=(SMALL,))
    validation = churn_fit_set(3000, seed=3)
    assert roc_auc(validation.labels, fitted.predict_proba(validation.features)) > 0.75


def test_the_smallest_candidate_within_tolerance_is_chosen() -> None:
    def candidate(objective: str, budget: TreeBudget, ndcg: float, cost: int) -> Candidate:
        return Candidate(
            objective,  # type: ignore[arg-type]
            budget,
            None,  # type: ignore[arg-type]
            10,
            0.1,
            cost / 10_000,
            {"m": ndcg},
            explain_cost=cost,
        )

    big = TreeBudget("large", 31, 8, 300, 0.05)
    candidates = [
        candidate("binary", SMALL, 0.700, 500),
        candidate("binary", big, 0.702, 5_000),
        candidate("lambdarank", SMALL, 0.690, 500),
    ]
    assert choose_candidate(candidates, "m").budget is SMALL
    assert choose_candidate(candidates, "m", tolerance=0.001).budget is big
    candidates.append(candidate("lambdarank", big, 0.720, 6_000))
    chosen = choose_candidate(candidates, "m")
    assert (chosen.objective, chosen.budget) == ("lambdarank", big)


def test_the_choice_goes_by_the_trees_not_by_a_timing() -> None:
    """Two candidates within tolerance: the one whose trees cost less to explain is chosen
    even when a busy moment made its measured milliseconds the larger, so the same data and
    code choose the same model on a quiet machine and a busy one."""

    def candidate(budget: TreeBudget, metric: float, cost: int, ms: float) -> Candidate:
        return Candidate("binary", budget, None, 10, 0.1, ms, {"m": metric}, explain_cost=cost)  # type: ignore[arg-type]

    quiet = [candidate(SMALL, 0.900, 3_000, 0.18), candidate(MEDIUM, 0.901, 8_000, 0.48)]
    busy = [candidate(SMALL, 0.900, 3_000, 0.90), candidate(MEDIUM, 0.901, 8_000, 0.48)]
    assert choose_candidate(quiet, "m").budget is SMALL
    assert choose_candidate(busy, "m").budget is SMALL


def test_the_explanation_cost_counts_leaves_times_depth(ranker_sets) -> None:
    import lightgbm as lgb

    train, _, _ = ranker_sets
    data = lgb.Dataset(train.features, train.labels, params={"verbosity": -1})
    params = {"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5, "max_bin": 31}
    # Stumps: two leaves at depth one, per tree.
    stumps = lgb.train({**params, "num_leaves": 2}, data, 10)
    assert explain_cost(stumps) == 10 * 2 * 1
    # Trees held to depth 2 fill their four leaves on 4,000 rows.
    deeper = lgb.train({**params, "num_leaves": 4, "max_depth": 2}, data, 10)
    assert explain_cost(deeper) == 10 * 4 * 2
    large = lgb.train({**params, "num_leaves": 63}, data, 100)
    assert explain_cost(large) > 50 * explain_cost(stumps)


def test_explanation_cost_grows_with_model_size(ranker_sets) -> None:
    import lightgbm as lgb

    train, _, _ = ranker_sets
    rows = slice(0, 3000)
    data = lgb.Dataset(train.features[rows], train.labels[rows], params={"verbosity": -1})
    params = {"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5, "max_bin": 31}
    small = lgb.train({**params, "num_leaves": 4}, data, 10)
    large = lgb.train({**params, "num_leaves": 63}, data, 100)
    assert measure_explain_ms(large, train.features) > measure_explain_ms(small, train.features)


def test_platt_and_isotonic_recover_a_known_calibration() -> None:
    rng = np.random.default_rng(3)
    raw = rng.normal(0.0, 2.0, 20000)
    truth = 1.0 / (1.0 + np.exp(-(0.5 * raw - 1.0)))
    labels = (rng.random(len(raw)) < truth).astype(float)
    platt = fit_platt(raw, labels)
    assert platt.a == pytest.approx(0.5, abs=0.05)
    assert platt.b == pytest.approx(-1.0, abs=0.08)
    isotonic = fit_isotonic(raw, labels)
    assert np.all(np.diff(isotonic.knots_y) >= 0)
    assert np.abs(isotonic.apply(raw) - truth).mean() < 0.03
    choice = choose_calibrator(raw, labels, np.arange(len(raw)), allow_sigmoid=True)
    # The raw score is not a calibrated log-odds here, so sigmoid must lose.
    assert choice.calibrator.kind in {"platt", "isotonic"}
    assert choice.scores["sigmoid"]["log_loss"] > choice.scores["platt"]["log_loss"]


def test_calibrator_round_trips_through_json() -> None:
    import json

    isotonic = Calibrator(kind="isotonic", knots_x=(-1.0, 0.0, 2.0), knots_y=(0.1, 0.2, 0.6))
    restored = Calibrator.from_dict(json.loads(json.dumps(isotonic.to_dict())))
    raw = np.array([-5.0, -1.0, 1.0, 9.0])
    assert restored.apply(raw) == pytest.approx([0.1, 0.1, 0.4, 0.6])
    assert calibrate(raw, isotonic.to_dict()) == pytest.approx(restored.apply(raw))
    assert calibrate(np.array([0.0]), None) == pytest.approx([0.5])
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibrator(kind="isotonic", knots_x=(0.0, 1.0), knots_y=(0.5, 0.2))


def test_fit_set_refuses_groups_that_are_not_contiguous() -> None:
    fit_set = FitSet(
        features=np.zeros((3, 1)),
        labels=np.zeros(3),
        groups=np.array(["a", "b", "a"]),
        feature_names=["x"],
    )
    with pytest.raises(ValueError, match="contiguous"):
        fit_set.group_sizes()


def test_the_choice_is_made_on_a_sample_and_refitted_on_all_rows(ranker_sets) -> None:
    train, tune, _ = ranker_sets
    fitted = fit_ranker(
        train, tune, objectives=("binary",), budgets=(SMALL, MEDIUM), sweep_rows=3000
    )
    swept = [c for c in fitted.candidates if c is not fitted.chosen]
    assert len(swept) == 2
    assert all(c.train_rows < 4000 for c in swept)
    assert fitted.chosen.train_rows == len(train.labels)
    assert fitted.booster is fitted.chosen.booster
    assert [row["chosen"] for row in fitted.tradeoff()] == [False, False, True]
