"""Pure metric functions for ranking, classification, calibration and off-policy value.

Every function checks its inputs and states its range. Grouped ranking metrics take one row per
(group, item) with a relevance label and a score; a group is one decision (the offers shown on one
invoice). Tied scores count as a random order of the tied items: the metrics give their expected
value over that order, so a constant scorer earns neither luck nor penalty from row order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_K = 3
DEFAULT_BINS = 10

ArrayLike = Sequence[Any] | np.ndarray | pd.Series


def _as_float(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def _check_same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    length = next(iter(lengths.values()))
    if length == 0:
        raise ValueError("inputs are empty")
    return length


def _check_labels(labels: np.ndarray, name: str = "labels") -> None:
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be 0 or 1")


def _check_probabilities(probabilities: np.ndarray, name: str = "probabilities") -> None:
    if (probabilities < 0.0).any() or (probabilities > 1.0).any():
        raise ValueError(f"{name} must lie in [0, 1]")


def _ranked(groups: ArrayLike, relevance: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Rows sorted by group and score (descending) with each row's position and tie block.

    A tie block is a run of equal scores within a group: its items share positions
    ``block_start … block_start + block_size - 1`` in a random order.
    """
    codes, _ = pd.factorize(np.asarray(groups))
    order = np.lexsort((-scores, codes))
    frame = pd.DataFrame(
        {"group": codes[order], "relevance": relevance[order], "score": scores[order]}
    )
    frame["position"] = frame.groupby("group", sort=False).cumcount()
    new_block = np.r_[
        True,
        (frame["group"].to_numpy()[1:] != frame["group"].to_numpy()[:-1])
        | (frame["score"].to_numpy()[1:] != frame["score"].to_numpy()[:-1]),
    ]
    frame["block"] = np.cumsum(new_block)
    by_block = frame.groupby("block", sort=False)
    frame["block_start"] = by_block["position"].transform("min")
    frame["block_size"] = by_block["position"].transform("size")
    frame["block_mean_relevance"] = by_block["relevance"].transform("mean")
    return frame


def ndcg_at_k(
    relevance: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int = DEFAULT_K
) -> float:
    """Mean NDCG@k over groups with at least one relevant item. Range [0, 1]; 1 = ideal order.

    Gain is the relevance (graded allowed, non-negative), discount ``1 / log2(position + 2)``.
    Groups without any relevant item are left out, as their NDCG is undefined. Tied scores count
    as a random order of the tied items (the expected DCG), so row order never matters.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    rel = _as_float(relevance, "relevance")
    score = _as_float(scores, "scores")
    group_arr = np.asarray(groups)
    _check_same_length(relevance=rel, scores=score, groups=group_arr)
    if (rel < 0).any():
        raise ValueError("relevance must be non-negative")
    ranked = _ranked(group_arr, rel, score)
    position = ranked["position"].to_numpy()
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    # Expected gain at each position of a tie block: the block's mean relevance.
    ranked["dcg"] = ranked["block_mean_relevance"].to_numpy() * discount
    ideal = ranked[["group", "relevance"]].sort_values(
        ["group", "relevance"], ascending=[True, False], kind="stable"
    )
    ideal_position = ideal.groupby("group", sort=False).cumcount().to_numpy()
    ideal_gain = np.where(
        ideal_position < k, ideal["relevance"].to_numpy() / np.log2(ideal_position + 2.0), 0.0
    )
    idcg = pd.Series(ideal_gain, index=ideal["group"].to_numpy()).groupby(level=0).sum()
    dcg = ranked.groupby("group")["dcg"].sum()
    judged = idcg[idcg > 0]
    if judged.empty:
        raise ValueError("no group has a relevant item; NDCG is undefined")
    return float((dcg.loc[judged.index] / judged).mean())


def hit_rate_at_k(relevance: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int = 1) -> float:
    """Share of groups (with at least one relevant item) whose top-k holds a relevant item.

    Range [0, 1]. With k=1: how often the first-ranked offer is the one the customer accepted.
    Tied scores count as a random order (the expected hit rate).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    rel = _as_float(relevance, "relevance")
    score = _as_float(scores, "scores")
    group_arr = np.asarray(groups)
    _check_same_length(relevance=rel, scores=score, groups=group_arr)
    ranked = _ranked(group_arr, rel, score)
    ranked["relevant"] = ranked["relevance"] > 0
    judged_groups = ranked.loc[ranked["relevant"], "group"].unique()
    if len(judged_groups) == 0:
        raise ValueError("no group has a relevant item; hit rate is undefined")
    # The first tie block of each group holding a relevant item decides the hit.
    blocks = (
        ranked[ranked["relevant"]]
        .groupby("block", sort=False)
        .agg(
            group=("group", "first"),
            start=("block_start", "first"),
            size=("block_size", "first"),
            relevant=("relevant", "size"),
        )
    )
    first = blocks.sort_values(["group", "start"]).drop_duplicates("group")
    slots = np.clip(k - first["start"].to_numpy(), 0, first["size"].to_numpy())
    size = first["size"].to_numpy().astype(float)
    irrelevant = size - first["relevant"].to_numpy()
    # P(no relevant item among `slots` drawn from the block) = C(irrel., slots) / C(size, slots)
    miss = np.ones(len(first))
    for i in range(k):
        active = i < slots
        miss[active] *= np.clip(irrelevant[active] - i, 0.0, None) / (size[active] - i)
    return float((1.0 - miss).sum() / len(judged_groups))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half). Range [0, 1]; 0.5 = chance."""
    y = _as_float(labels, "labels")
    score = _as_float(scores, "scores")
    _check_same_length(labels=y, scores=score)
    _check_labels(y)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    ranks = pd.Series(score).rank(method="average").to_numpy()
    rank_sum = ranks[y == 1.0].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: ArrayLike, probabilities: ArrayLike, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy in nats. Range [0, -log(eps)]; 0 = certain and right."""
    y = _as_float(labels, "labels")
    p = _as_float(probabilities, "probabilities")
    _check_same_length(labels=y, probabilities=p)
    _check_labels(y)
    _check_probabilities(p)
    clipped = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log(1.0 - clipped)))


def reliability_table(
    labels: ArrayLike, probabilities: ArrayLike, bins: int = DEFAULT_BINS
) -> pd.DataFrame:
    """Per equal-width probability bin: rows, mean predicted probability and observed rate."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    y = _as_float(labels, "labels")
    p = _as_float(probabilities, "probabilities")
    _check_same_length(labels=y, probabilities=p)
    _check_labels(y)
    _check_probabilities(p)
    index = np.minimum((p * bins).astype(int), bins - 1)
    frame = pd.DataFrame({"bin": index, "p": p, "y": y})
    table = frame.groupby("bin").agg(
        rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean")
    )
    table["lower"] = table.index / bins
    table["upper"] = (table.index + 1) / bins
    return table.reset_index()


def expected_calibration_error(
    labels: ArrayLike, probabilities: ArrayLike, bins: int = DEFAULT_BINS
) -> float:
    """Row-weighted mean |predicted - observed| over equal-width bins. Range [0, 1]; 0 is ideal."""
    table = reliability_table(labels, probabilities, bins)
    weights = table["rows"] / table["rows"].sum()
    return float((weights * (table["predicted"] - table["observed"]).abs()).sum())


def lift_at_top(labels: ArrayLike, scores: ArrayLike, fraction: float = 0.1) -> float:
    """Positive rate among the top ``fraction`` by score over the overall rate.

    Range [0, 1 / base rate]; 1 = no better than random. Rows tied at the cut count in proportion
    (the expected rate over a random order of the tied rows).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    y = _as_float(labels, "labels")
    score = _as_float(scores, "scores")
    n = _check_same_length(labels=y, scores=score)
    _check_labels(y)
    base_rate = y.mean()
    if base_rate == 0.0:
        raise ValueError("lift needs at least one positive label")
    top = max(1, int(np.ceil(n * fraction)))
    cut = np.sort(score)[::-1][top - 1]
    above = score > cut
    at_cut = score == cut
    share = (top - above.sum()) / at_cut.sum()
    positives = y[above].sum() + share * y[at_cut].sum()
    return float(positives / top / base_rate)


def _check_off_policy(
    rewards: ArrayLike, target_probability: ArrayLike, propensity: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = _as_float(rewards, "rewards")
    target = _as_float(target_probability, "target_probability")
    logged = _as_float(propensity, "propensity")
    _check_same_length(rewards=r, target_probability=target, propensity=logged)
    _check_probabilities(target, "target_probability")
    if (logged <= 0.0).any() or (logged > 1.0).any():
        raise ValueError("propensity must lie in (0, 1]")
    return r, target, logged


def ips_value(rewards: ArrayLike, target_probability: ArrayLike, propensity: ArrayLike) -> float:
    """Inverse propensity scoring: the target policy's mean reward per logged action.

    ``target_probability`` is the probability the evaluated policy takes the logged action,
    ``propensity`` the logging policy's. Unbiased when the propensities are right; unbounded
    above (large weights), so read it with :func:`snips_value` and the effective sample size.
    """
    r, target, logged = _check_off_policy(rewards, target_probability, propensity)
    return float(np.mean(r * target / logged))


def snips_value(rewards: ArrayLike, target_probability: ArrayLike, propensity: ArrayLike) -> float:
    """Self-normalised IPS: weights rescaled to sum to one; biased, with less variance."""
    r, target, logged = _check_off_policy(rewards, target_probability, propensity)
    weights = target / logged
    if weights.sum() == 0.0:
        raise ValueError("the target policy never takes a logged action; SNIPS is undefined")
    return float(np.sum(weights * r) / np.sum(weights))


def effective_sample_size(target_probability: ArrayLike, propensity: ArrayLike) -> float:
    """Kish's effective sample size of the importance weights. Range [0, n]."""
    target = _as_float(target_probability, "target_probability")
    logged = _as_float(propensity, "propensity")
    _check_same_length(target_probability=target, propensity=logged)
    weights = target / logged
    denominator = float(np.sum(weights**2))
    return 0.0 if denominator == 0.0 else float(np.sum(weights) ** 2 / denominator)


def doubly_robust_value(
    rewards: ArrayLike,
    target_probability: ArrayLike,
    propensity: ArrayLike,
    model_reward_logged: ArrayLike,
    model_value_target: ArrayLike,
) -> float:
    """Doubly robust: a reward model's value of the target policy, corrected by IPS on its error.

    Per logged action: ``model_value_target + target / propensity × (reward −
    model_reward_logged)``, where ``model_value_target`` is the model's expected reward of what
    the target policy would do in that context and ``model_reward_logged`` its prediction for the
    logged action. Unbiased when either the propensities or the reward model are right.
    """
    r, target, logged = _check_off_policy(rewards, target_probability, propensity)
    predicted = _as_float(model_reward_logged, "model_reward_logged")
    direct = _as_float(model_value_target, "model_value_target")
    _check_same_length(rewards=r, model_reward_logged=predicted, model_value_target=direct)
    return float(np.mean(direct + target / logged * (r - predicted)))


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate with its bootstrap 95 % interval (percentile method)."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    size: int,
    *,
    resamples: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over resamples of ``range(size)``."""
    if size < 1:
        raise ValueError("a bootstrap needs at least one row")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        try:
            values.append(statistic(rng.integers(0, size, size)))
        except ValueError:  # e.g. SNIPS on a resample where the target takes no logged action
            continue
    if not values:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def off_policy_estimates(
    rewards: ArrayLike,
    target_probability: ArrayLike,
    propensity: ArrayLike,
    model_reward_logged: ArrayLike,
    model_value_target: ArrayLike,
    *,
    resamples: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """IPS, self-normalised IPS and doubly robust, each with a bootstrap 95 % interval, and the
    effective sample size of the importance weights."""
    r, target, logged = _check_off_policy(rewards, target_probability, propensity)
    predicted = _as_float(model_reward_logged, "model_reward_logged")
    direct = _as_float(model_value_target, "model_value_target")
    estimators: dict[str, Callable[[np.ndarray], float]] = {
        "ips": lambda i: ips_value(r[i], target[i], logged[i]),
        "snips": lambda i: snips_value(r[i], target[i], logged[i]),
        "dr": lambda i: doubly_robust_value(r[i], target[i], logged[i], predicted[i], direct[i]),
    }
    everything = np.arange(len(r))
    result: dict[str, Any] = {}
    for name, estimator in estimators.items():
        try:
            value = estimator(everything)
        except ValueError:
            value = float("nan")
        low, high = bootstrap_interval(estimator, len(r), resamples=resamples, seed=seed)
        result[name] = Estimate(value, low, high).as_dict()
    result["effective_sample_size"] = effective_sample_size(target, logged)
    result["rows"] = len(r)
    return result
