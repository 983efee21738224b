"""LightGBM fitting: objectives, tree budgets, early stopping, calibration and explanation cost.

Serving explains every shown offer with ``pred_contrib`` on the request path, and its cost grows
with trees × leaves × depth. So each model is fitted under a few tree budgets, and the smallest
budget whose held-out quality is within a tolerance of the best is kept; the measured trade-off
(quality against explanation milliseconds) goes into the evaluation report.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.calibration import CalibrationChoice, Calibrator, choose_calibrator
from training.metrics import log_loss, ndcg_at_k, roc_auc
from training.model_inputs import SERVED_POSITION, SHOWN_POSITION

log = logging.getLogger(__name__)

Objective = Literal["binary", "lambdarank"]
RANKER_OBJECTIVES: tuple[Objective, ...] = ("binary", "lambdarank")
EXPLAIN_ROWS = 3  # offers shown on one invoice by default
QUALITY_TOLERANCE = 0.003  # a smaller model may give up this much of the primary metric


@dataclass(frozen=True)
class TreeBudget:
    """How big a model may grow; early stopping decides how many of ``max_trees`` are kept."""

    name: str
    num_leaves: int
    max_depth: int
    max_trees: int
    learning_rate: float

    def params(self) -> dict[str, Any]:
        return {
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
        }


TREE_BUDGETS: tuple[TreeBudget, ...] = (
    TreeBudget("small", num_leaves=7, max_depth=3, max_trees=150, learning_rate=0.1),
    TreeBudget("medium", num_leaves=15, max_depth=5, max_trees=150, learning_rate=0.1),
    TreeBudget("large", num_leaves=31, max_depth=8, max_trees=300, learning_rate=0.08),
)

BASE_PARAMS: dict[str, Any] = {
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "verbosity": -1,
    "num_threads": 0,
    "deterministic": True,
    "force_row_wise": True,
}
EARLY_STOPPING_ROUNDS = 20
# Below this many rows one thread is faster: OpenMP threads spin and lose when cores are shared.
SINGLE_THREAD_ROWS = 200_000
# The objective and budget are chosen on at most this many training rows; only the chosen one is
# then fitted on the whole training sample.
SWEEP_ROWS = 120_000


@dataclass
class FitSet:
    """A model matrix with labels and groups (decision or customer), rows of a group contiguous."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    feature_names: list[str]
    # Per-row training weights (None: all rows alike), e.g. inverse logged propensities.
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = len(self.features)
        if len(self.labels) != rows or len(self.groups) != rows:
            raise ValueError("features, labels and groups differ in length")
        if self.weights is not None and len(self.weights) != rows:
            raise ValueError("weights and features differ in length")
        if self.features.shape[1] != len(self.feature_names):
            raise ValueError("feature_names do not match the matrix width")

    def shown_first(self) -> np.ndarray:
        """Rows logged in the first place on the invoice (all rows without a position input):
        the rows whose outcome is what serving predicts, acceptance when shown first."""
        if SHOWN_POSITION not in self.feature_names:
            return np.ones(len(self.labels), dtype=bool)
        position = self.features[:, self.feature_names.index(SHOWN_POSITION)]
        return np.asarray(position == SERVED_POSITION)

    def group_sizes(self) -> np.ndarray:
        """Sizes of consecutive runs of one group, as LightGBM's query groups expect."""
        groups = np.asarray(self.groups)
        if len(groups) == 0:
            return np.zeros(0, dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        sizes = np.diff(np.r_[starts, len(groups)])
        if len(np.unique(groups[starts])) != len(starts):
            raise ValueError("rows of a group must be contiguous")
        return sizes

    def sample_groups(self, max_rows: int, seed: int) -> FitSet:
        """Whole groups at random until about ``max_rows`` rows, in their original order."""
        if len(self.labels) <= max_rows:
            return self
        codes, uniques = pd.factorize(np.asarray(self.groups))
        keep = np.random.default_rng(seed).random(len(uniques)) < max_rows / len(self.labels)
        rows = keep[codes]
        return FitSet(
            self.features[rows],
            self.labels[rows],
            self.groups[rows],
            self.feature_names,
            None if self.weights is None else self.weights[rows],
        )

    def dataset(self, reference: lgb.Dataset | None = None, ranking: bool = True) -> lgb.Dataset:
        """A LightGBM Dataset; query groups only for ranking (churn rows of a customer repeat)."""
        data = lgb.Dataset(
            self.features,
            label=self.labels,
            weight=self.weights,
            feature_name=self.feature_names,
            reference=reference,
            params={"max_bin": BASE_PARAMS["max_bin"], "verbosity": -1},
            free_raw_data=False,
        )
        if ranking:
            data.set_group(self.group_sizes())
        return data


@dataclass
class Candidate:
    """One fitted (objective, budget) with its held-out figures."""

    objective: Objective
    budget: TreeBudget
    booster: lgb.Booster
    trees: int
    fit_seconds: float
    explain_ms: float
    tune_metrics: dict[str, float]
    train_rows: int = 0
    # The trees' explanation work (explain_cost): what the choice among candidates goes by.
    explain_cost: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "budget": self.budget.name,
            "train_rows": self.train_rows,
            "num_leaves": self.budget.num_leaves,
            "max_depth": self.budget.max_depth,
            "trees": self.trees,
            "fit_seconds": round(self.fit_seconds, 2),
            "pred_contrib_ms_3_rows": round(self.explain_ms, 3),
            "explain_cost": self.explain_cost,
            **{key: round(value, 5) for key, value in self.tune_metrics.items()},
        }


@dataclass
class FittedModel:
    """The chosen booster, its calibrator and how it was chosen."""

    booster: lgb.Booster
    calibrator: Calibrator
    chosen: Candidate
    candidates: list[Candidate]
    calibration: CalibrationChoice
    primary_metric: str
    params: dict[str, Any] = field(default_factory=dict)

    def predict_raw(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, raw_score=True), dtype=float)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.calibrator.apply(self.predict_raw(features))

    def tradeoff(self) -> list[dict[str, Any]]:
        """Every candidate's size, quality and explanation cost, the chosen one marked."""
        rows = []
        for candidate in self.candidates:
            row = candidate.summary()
            row["chosen"] = candidate is self.chosen
            rows.append(row)
        return rows


def explain_cost(booster: lgb.Booster) -> int:
    """The work ``pred_contrib`` does for one row, in leaf visits: over the trees, each tree's
    leaves times its depth. On the six candidates of a quality-bench world (price, seed 11),
    ``measure_explain_ms`` gave 58–63 ns per unit for every one of 30 trees or more (96 ns for a
    lambdarank of 24 trees, whose fixed cost per call weighs more): it orders candidates as their
    timings do on a quiet machine, and the same way on a busy one."""
    total = 0
    for tree in booster.dump_model()["tree_info"]:
        leaves, depth = _leaves_and_depth(tree["tree_structure"])
        total += leaves * max(depth, 1)
    return total


def _leaves_and_depth(node: dict[str, Any]) -> tuple[int, int]:
    """A tree's number of leaves and its depth (a single leaf: 0), without recursion limits."""
    leaves = depth = 0
    stack = [(node, 0)]
    while stack:
        current, level = stack.pop()
        if "left_child" in current:
            stack.append((current["left_child"], level + 1))
            stack.append((current["right_child"], level + 1))
        else:
            leaves += 1
            depth = max(depth, level)
    return leaves, depth


def measure_explain_ms(
    booster: lgb.Booster, features: np.ndarray, rows: int = EXPLAIN_ROWS, repeats: int = 30
) -> float:
    """Median milliseconds of ``pred_contrib`` for ``rows`` rows on one thread."""
    sample = np.ascontiguousarray(features[:rows], dtype=np.float64)
    booster.predict(sample, pred_contrib=True, num_threads=1)  # warm up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        booster.predict(sample, pred_contrib=True, num_threads=1)
        timings.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(timings))


def training_threads(rows: int) -> int:
    """Threads for LightGBM: one for small sets or a busy machine, else every core.

    OpenMP threads busy-wait; on cores other processes are using, two threads were measured
    2.5 times slower than one (150 trees on 400,000 rows: 145 s against 57 s).
    """
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    busy = os.getloadavg()[0] > cores - 0.5 if hasattr(os, "getloadavg") else False
    return 1 if rows < SINGLE_THREAD_ROWS or busy else cores


def fit_booster(
    train: lgb.Dataset,
    tune: lgb.Dataset,
    objective: Objective,
    budget: TreeBudget,
    seed: int,
) -> lgb.Booster:
    """Fit one booster with early stopping on the tune set."""
    params = {**BASE_PARAMS, **budget.params(), "objective": objective, "seed": seed}
    params["num_threads"] = training_threads(np.asarray(train.get_label()).size)
    if objective == "lambdarank":
        params.update(metric="ndcg", eval_at=[3], lambdarank_truncation_level=3)
    else:
        params.update(metric="binary_logloss")
    return lgb.train(
        params,
        train,
        num_boost_round=budget.max_trees,
        valid_sets=[tune],
        valid_names=["tune"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )


def _ranking_metrics(tune: FitSet, raw: np.ndarray) -> dict[str, float]:
    first = tune.shown_first()
    return {
        "tune_ndcg_at_3": ndcg_at_k(tune.labels, raw, tune.groups, k=3),
        "tune_auc": roc_auc(tune.labels, raw),
        "tune_first_auc": roc_auc(tune.labels[first], raw[first]),
    }


def _churn_metrics(tune: FitSet, raw: np.ndarray) -> dict[str, float]:
    probability = 1.0 / (1.0 + np.exp(-raw))
    return {
        "tune_auc": roc_auc(tune.labels, raw),
        "tune_log_loss": log_loss(tune.labels, probability),
    }


def _fit_one(
    train: FitSet,
    tune: FitSet,
    train_set: lgb.Dataset,
    tune_set: lgb.Dataset,
    objective: Objective,
    budget: TreeBudget,
    seed: int,
    ranking: bool,
) -> Candidate:
    start = time.perf_counter()
    booster = fit_booster(train_set, tune_set, objective, budget, seed)
    seconds = time.perf_counter() - start
    # Keep only the trees early stopping chose, so serving explains exactly those.
    booster = lgb.Booster(model_str=booster.model_to_string())
    raw = np.asarray(booster.predict(tune.features, raw_score=True), dtype=float)
    metrics = _ranking_metrics(tune, raw) if ranking else _churn_metrics(tune, raw)
    candidate = Candidate(
        objective=objective,
        budget=budget,
        booster=booster,
        trees=booster.num_trees(),
        fit_seconds=seconds,
        explain_ms=measure_explain_ms(booster, tune.features),
        tune_metrics=metrics,
        train_rows=len(train.labels),
        explain_cost=explain_cost(booster),
    )
    log.info("candidate %s", candidate.summary())
    return candidate


def _fit_candidates(
    train: FitSet,
    tune: FitSet,
    objectives: Sequence[Objective],
    budgets: Sequence[TreeBudget],
    seed: int,
    ranking: bool,
    sweep_rows: int = SWEEP_ROWS,
) -> list[Candidate]:
    """One candidate per (objective, budget), fitted on at most ``sweep_rows`` training rows."""
    sweep = train.sample_groups(sweep_rows, seed)
    train_set = sweep.dataset(ranking=ranking)
    tune_set = tune.dataset(reference=train_set, ranking=ranking)
    return [
        _fit_one(sweep, tune, train_set, tune_set, objective, budget, seed, ranking)
        for objective in objectives
        for budget in budgets
    ]


def _refit(chosen: Candidate, train: FitSet, tune: FitSet, seed: int, ranking: bool) -> Candidate:
    """The chosen objective and budget fitted on the whole training sample."""
    if chosen.train_rows >= len(train.labels):
        return chosen
    train_set = train.dataset(ranking=ranking)
    tune_set = tune.dataset(reference=train_set, ranking=ranking)
    return _fit_one(
        train, tune, train_set, tune_set, chosen.objective, chosen.budget, seed, ranking
    )


def choose_candidate(
    candidates: Sequence[Candidate], metric: str, tolerance: float = QUALITY_TOLERANCE
) -> Candidate:
    """The cheapest-to-explain candidate within ``tolerance`` of the best on ``metric``.

    The objective is chosen first (the best candidate's objective), then the budget within it.
    "Cheapest" is the trees' ``explain_cost``, not the measured milliseconds: a timing moves with
    whatever else the machine runs, so a choice made by it can give another model from the same
    data and code (two candidates whose timings are close swap places on a busy moment).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    best = max(candidates, key=lambda c: c.tune_metrics[metric])
    same_objective = [c for c in candidates if c.objective == best.objective]
    good_enough = [
        c for c in same_objective if c.tune_metrics[metric] >= best.tune_metrics[metric] - tolerance
    ]
    return min(good_enough, key=lambda c: (c.explain_cost, -c.tune_metrics[metric]))


def _finish(
    candidates: list[Candidate],
    train: FitSet,
    tune: FitSet,
    metric: str,
    params: dict[str, Any],
    ranking: bool,
) -> FittedModel:
    chosen = _refit(choose_candidate(candidates, metric), train, tune, params["seed"], ranking)
    if chosen not in candidates:
        candidates = [*candidates, chosen]
    raw = np.asarray(chosen.booster.predict(tune.features, raw_score=True), dtype=float)
    calibration = choose_calibrator(
        raw, tune.labels, tune.groups, allow_sigmoid=chosen.objective == "binary"
    )
    log.info("%s", calibration.describe())
    return FittedModel(
        booster=chosen.booster,
        calibrator=calibration.calibrator,
        chosen=chosen,
        candidates=candidates,
        calibration=calibration,
        primary_metric=metric,
        params={
            **BASE_PARAMS,
            **asdict(chosen.budget),
            "objective": chosen.objective,
            "trees": chosen.trees,
            "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
            "quality_tolerance": QUALITY_TOLERANCE,
            "calibrator": calibration.calibrator.kind,
            **params,
        },
    )


def fit_ranker(
    train: FitSet,
    tune: FitSet,
    objectives: Sequence[Objective] = RANKER_OBJECTIVES,
    budgets: Sequence[TreeBudget] = TREE_BUDGETS,
    seed: int = 7,
    sweep_rows: int = SWEEP_ROWS,
) -> FittedModel:
    """Acceptance model: binary against LambdaRank (grouped by decision), over tree budgets.

    Chosen on the tune set (the newest training months) by the AUC of the offers shown first
    (``tune_first_auc``: the place the served policy fills; NDCG@3 is reported beside it) among
    candidates fitted on at most ``sweep_rows`` rows; the chosen one is refitted on all of
    ``train`` and calibrated on the tune set.
    """
    candidates = _fit_candidates(train, tune, objectives, budgets, seed, True, sweep_rows)
    return _finish(candidates, train, tune, "tune_first_auc", {"seed": seed}, ranking=True)


def fit_churn(
    train: FitSet,
    tune: FitSet,
    budgets: Sequence[TreeBudget] = TREE_BUDGETS,
    seed: int = 7,
    sweep_rows: int = SWEEP_ROWS,
) -> FittedModel:
    """Churn-risk model: binary, chosen by tune-set AUC over tree budgets, then calibrated."""
    candidates = _fit_candidates(train, tune, ("binary",), budgets, seed, False, sweep_rows)
    return _finish(candidates, train, tune, "tune_auc", {"seed": seed}, ranking=False)
