"""Metric functions at their limits, against hand-computed values, and their input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import (
    bootstrap_interval,
    doubly_robust_value,
    effective_sample_size,
    expected_calibration_error,
    hit_rate_at_k,
    ips_value,
    lift_at_top,
    log_loss,
    ndcg_at_k,
    off_policy_estimates,
    reliability_table,
    roc_auc,
    snips_value,
)

# Two decisions of three offers each; offer "b" accepted in d1, offer "f" in d2.
GROUPS = ["d1", "d1", "d1", "d2", "d2", "d2"]
RELEVANCE = [0, 1, 0, 0, 0, 1]


def test_ndcg_is_one_for_a_perfect_ranking() -> None:
    scores = [0.1, 0.9, 0.2, 0.3, 0.2, 0.8]
    assert ndcg_at_k(RELEVANCE, scores, GROUPS, k=3) == pytest.approx(1.0)
    assert hit_rate_at_k(RELEVANCE, scores, GROUPS, k=1) == pytest.approx(1.0)


def test_ndcg_is_zero_when_no_relevant_item_reaches_the_top_k() -> None:
    scores = [0.9, 0.1, 0.8, 0.9, 0.8, 0.1]
    assert ndcg_at_k(RELEVANCE, scores, GROUPS, k=2) == pytest.approx(0.0)
    assert hit_rate_at_k(RELEVANCE, scores, GROUPS, k=1) == pytest.approx(0.0)


def test_ndcg_of_a_relevant_item_in_third_place() -> None:
    # DCG = 1/log2(4) = 0.5, IDCG = 1.
    scores = [0.9, 0.1, 0.8, 0.3, 0.2, 0.8]
    expected = (0.5 + 1.0) / 2
    assert ndcg_at_k(RELEVANCE, scores, GROUPS, k=3) == pytest.approx(expected)
    assert hit_rate_at_k(RELEVANCE, scores, GROUPS, k=1) == pytest.approx(0.5)
    assert hit_rate_at_k(RELEVANCE, scores, GROUPS, k=3) == pytest.approx(1.0)


def test_ndcg_with_graded_relevance_matches_the_textbook_formula() -> None:
    relevance = [3, 2, 0, 1]
    scores = [0.1, 0.4, 0.3, 0.2]  # order: 2, 0, 1, 3
    dcg = 2 / math.log2(2) + 0 / math.log2(3) + 1 / math.log2(4) + 3 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(relevance, scores, ["q"] * 4, k=4) == pytest.approx(dcg / idcg)


def test_ties_count_as_a_random_order_whatever_the_row_order() -> None:
    # A constant scorer earns the expected value of a random order, first row relevant or not.
    expected_ndcg = (1.0 + 1.0 / math.log2(3) + 0.5) / 3
    for relevance in ([1, 0, 0], [0, 0, 1]):
        assert hit_rate_at_k(relevance, [0.5] * 3, ["d"] * 3, k=1) == pytest.approx(1 / 3)
        assert hit_rate_at_k(relevance, [0.5] * 3, ["d"] * 3, k=2) == pytest.approx(2 / 3)
        assert ndcg_at_k(relevance, [0.5] * 3, ["d"] * 3, k=3) == pytest.approx(expected_ndcg)
    # One item ranked first, then two tied; the relevant one among the tie: hit@2 = 1/2.
    assert hit_rate_at_k([0, 1, 0], [0.9, 0.5, 0.5], ["d"] * 3, k=2) == pytest.approx(0.5)
    assert ndcg_at_k([0, 1, 0], [0.9, 0.5, 0.5], ["d"] * 3, k=2) == pytest.approx(
        0.5 / math.log2(3)
    )


def test_groups_without_any_relevant_item_are_left_out() -> None:
    groups = [*GROUPS, "d3", "d3"]
    relevance = [*RELEVANCE, 0, 0]
    scores = [0.1, 0.9, 0.2, 0.3, 0.2, 0.8, 0.5, 0.4]
    assert ndcg_at_k(relevance, scores, groups) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no group has a relevant item"):
        ndcg_at_k([0, 0], [0.1, 0.2], ["a", "a"])


def test_auc_limits_and_ties() -> None:
    labels = [0, 0, 1, 1]
    assert roc_auc(labels, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    assert roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # One positive above both negatives, one tied with one negative: (2 + 1.5) / 4.
    assert roc_auc(labels, [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_auc_agrees_with_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + labels * 0.3, 2)  # rounded: many ties
    assert roc_auc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))
    probabilities = np.clip(scores / scores.max(), 0.01, 0.99)
    assert log_loss(labels, probabilities) == pytest.approx(
        sklearn_metrics.log_loss(labels, probabilities)
    )


def test_log_loss_limits() -> None:
    assert log_loss([0, 1], [0.0, 1.0]) == pytest.approx(0.0, abs=1e-12)
    assert log_loss([0, 1], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))


def test_expected_calibration_error_limits() -> None:
    # Each bin's mean prediction equals its observed rate: ECE 0.
    labels = [0, 0, 0, 1, 1, 1, 1, 0]
    probabilities = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75]
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.0)
    # Always certain and always wrong: ECE 1.
    assert expected_calibration_error([0, 1], [1.0, 0.0]) == pytest.approx(1.0)
    table = reliability_table(labels, probabilities, bins=4)
    assert table["rows"].sum() == 8
    assert list(table["observed"]) == pytest.approx([0.25, 0.75])


def test_lift_at_top() -> None:
    labels = [1] + [0] * 9
    assert lift_at_top(labels, np.linspace(1, 0, 10), 0.1) == pytest.approx(10.0)
    assert lift_at_top(labels, np.linspace(0, 1, 10), 0.1) == pytest.approx(0.0)
    assert lift_at_top(labels, np.linspace(0, 1, 10), 1.0) == pytest.approx(1.0)
    # A constant score: every row tied at the cut, lift 1 (random).
    assert lift_at_top(labels, np.zeros(10), 0.1) == pytest.approx(1.0)


def test_ips_and_snips_equal_the_observed_value_when_target_is_logging() -> None:
    rewards = np.array([1.0, 0.0, 0.0, 1.0])
    propensity = np.array([0.5, 0.5, 0.25, 1.0])
    # A stochastic target identical to the logging policy: weights 1, value = observed mean.
    assert ips_value(rewards, propensity, propensity) == pytest.approx(0.5)
    assert snips_value(rewards, propensity, propensity) == pytest.approx(0.5)
    assert effective_sample_size(propensity, propensity) == pytest.approx(4.0)


def test_ips_weights_by_inverse_propensity() -> None:
    rewards = [1.0, 0.0, 1.0]
    takes = [1.0, 1.0, 0.0]
    propensity = [0.5, 0.25, 0.5]
    assert ips_value(rewards, takes, propensity) == pytest.approx((2.0 + 0.0 + 0.0) / 3)
    assert snips_value(rewards, takes, propensity) == pytest.approx(2.0 / 6.0)
    assert effective_sample_size(takes, propensity) == pytest.approx(36.0 / 20.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_auc([0, 0], [0.1, 0.2]), "both positive and negative"),
        (lambda: roc_auc([0, 2], [0.1, 0.2]), "must be 0 or 1"),
        (lambda: roc_auc([0, 1], [0.1]), "differ in length"),
        (lambda: roc_auc([], []), "empty"),
        (lambda: log_loss([0, 1], [0.1, 1.2]), r"\[0, 1\]"),
        (lambda: ndcg_at_k([1], [float("nan")], ["a"]), "NaN"),
        (lambda: ndcg_at_k([1], [0.1], ["a"], k=0), "k must be"),
        (lambda: ndcg_at_k([-1], [0.1], ["a"]), "non-negative"),
        (lambda: lift_at_top([0, 0], [0.1, 0.2]), "positive"),
        (lambda: ips_value([1.0], [1.0], [0.0]), r"\(0, 1\]"),
        (lambda: snips_value([1.0], [0.0], [0.5]), "never takes"),
        (lambda: expected_calibration_error([0], [0.2], bins=0), "bins"),
    ],
)
def test_inputs_are_checked(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def _brute_force(relevance: list[int], scores: list[int], k: int) -> tuple[float, float]:
    """NDCG@k and hit@k averaged over every order that sorts the scores (ties in any order)."""
    from itertools import permutations

    ideal = sorted(relevance, reverse=True)
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal[:k]))
    orders = [
        order
        for order in permutations(range(len(scores)))
        if all(scores[order[i]] >= scores[order[i + 1]] for i in range(len(order) - 1))
    ]
    ndcg = [
        sum(relevance[j] / math.log2(i + 2) for i, j in enumerate(o[:k])) / idcg for o in orders
    ]
    hits = [float(any(relevance[j] > 0 for j in o[:k])) for o in orders]
    return sum(ndcg) / len(orders), sum(hits) / len(orders)


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=6).filter(
        lambda rows: any(r > 0 for r, _ in rows)
    ),
    st.integers(1, 4),
)
@settings(max_examples=60, deadline=None)
def test_metrics_equal_the_average_over_tie_orders(rows: list[tuple[int, int]], k: int) -> None:
    relevance = [r for r, _ in rows]
    scores = [s for _, s in rows]
    expected_ndcg, expected_hit = _brute_force(relevance, scores, k)
    groups = ["g"] * len(rows)
    assert ndcg_at_k(relevance, scores, groups, k=k) == pytest.approx(expected_ndcg)
    assert hit_rate_at_k(relevance, scores, groups, k=k) == pytest.approx(expected_hit)


def test_doubly_robust_on_a_hand_computed_case() -> None:
    # Three logged actions; the target takes the first two.
    rewards = np.array([1.0, 0.0, 1.0])
    target = np.array([1.0, 1.0, 0.0])
    propensity = np.array([0.5, 0.25, 0.5])
    predicted = np.array([0.4, 0.2, 0.6])  # the reward model on the logged actions
    direct = np.array([0.4, 0.2, 0.3])  # the reward model on the target's actions
    # (0.4 + 2 × 0.6) + (0.2 + 4 × −0.2) + (0.3 + 0) = 1.6 − 0.6 + 0.3 = 1.3; / 3
    assert doubly_robust_value(rewards, target, propensity, predicted, direct) == pytest.approx(
        1.3 / 3
    )
    # IPS: (2 × 1 + 4 × 0 + 0) / 3; SNIPS: 2 / (2 + 4)
    assert ips_value(rewards, target, propensity) == pytest.approx(2 / 3)
    assert snips_value(rewards, target, propensity) == pytest.approx(1 / 3)
    # A perfect reward model makes DR its direct estimate whatever the weights.
    exact = doubly_robust_value(rewards, target, propensity, rewards, direct)
    assert exact == pytest.approx(direct.mean())


def test_off_policy_estimates_have_intervals_around_them() -> None:
    rng = np.random.default_rng(3)
    n = 2_000
    propensity = np.full(n, 0.25)
    target = (rng.random(n) < 0.25).astype(float)  # the target takes the logged action 1 in 4
    rewards = (rng.random(n) < 0.3).astype(float)
    estimates = off_policy_estimates(
        rewards, target, propensity, np.full(n, 0.3), np.full(n, 0.3), resamples=200
    )
    for name in ("ips", "snips", "dr"):
        found = estimates[name]
        assert found["low"] <= found["value"] <= found["high"], name
        assert found["value"] == pytest.approx(0.3, abs=0.06), name
        assert found["high"] - found["low"] < 0.2, name
    # Weights of 4 on a quarter of the rows: Kish's ESS is a quarter of n.
    assert estimates["effective_sample_size"] == pytest.approx(target.sum(), rel=1e-9)
    assert estimates["rows"] == n


def test_bootstrap_interval_of_a_constant_is_the_constant() -> None:
    low, high = bootstrap_interval(lambda i: 5.0, 10, resamples=20)
    assert (low, high) == (5.0, 5.0)
    with pytest.raises(ValueError, match="at least one row"):
        bootstrap_interval(lambda i: 0.0, 0)


def test_open_bandit_pipeline_agrees_where_it_installs() -> None:
    obp = pytest.importorskip(
        "obp.ope",
        reason="Open Bandit Pipeline (obp 0.5.7, the newest) installs on Python < 3.11 only",
    )
    rng = np.random.default_rng(5)
    n, actions = 500, 4
    logged = rng.integers(0, actions, n)
    propensity = np.full(n, 1 / actions)
    rewards = (rng.random(n) < 0.2).astype(float)
    choice = rng.integers(0, actions, n)
    action_dist = np.zeros((n, actions, 1))
    action_dist[np.arange(n), choice, 0] = 1.0
    target = (choice == logged).astype(float)
    feedback = {"action": logged, "reward": rewards, "pscore": propensity, "position": None}
    ips = obp.InverseProbabilityWeighting().estimate_policy_value(
        action_dist=action_dist, **feedback
    )
    assert ips_value(rewards, target, propensity) == pytest.approx(ips)
