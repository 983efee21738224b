"""``offers train``: build both training sets, fit, evaluate against baselines, log and register.

This module only orchestrates: training sets come from :mod:`training.data`, fitting from
:mod:`training.model`, figures from :mod:`training.evaluate`, and every MLflow call goes through
:mod:`training.tracking`. A model already trained on the same data with the same settings is not
trained again (its registered version is reported instead), so a rerun changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.catalog import load_catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.settings import Settings, get_settings
from training import data, tracking
from training.candidates import CANDIDATE_SET, candidate_rows
from training.drift import INPUT_PROFILE_METADATA, InputProfile, input_profile
from training.evaluate import (
    MODEL,
    POPULARITY,
    RULES,
    RULES_SCORE,
    ChurnEvaluation,
    PopularityBaseline,
    RankerEvaluation,
    RulesBaseline,
    churn_markdown,
    evaluate_churn,
    evaluate_ranker,
    off_policy_value,
    ranker_markdown,
    segment_offer_acceptance,
    to_json,
)
from training.labels import LABEL
from training.model import FitSet, FittedModel, fit_churn, fit_ranker
from training.model_inputs import (
    CHURN_FEATURES,
    RANKER_FEATURES,
    model_matrix,
    model_may_score,
    monitored_frame,
)
from training.registry import (
    CHAMPION_METRIC_PREFIX,
    CHURN_MODEL,
    COMPARED_VERSION_TAG,
    PRIMARY_METRIC,
    RANKER_MODEL,
    ModelInputsMismatch,
    load_champion,
)
from training.splits import TRAIN, TUNE, VALIDATION

log = logging.getLogger(__name__)

FINGERPRINT_TAG = "data_fingerprint"
SETTINGS_FINGERPRINT_TAG = "settings_fingerprint"
CODE_FINGERPRINT_TAG = "code_fingerprint"
# The code that decides what a trained model is: training itself, the feature transforms and the
# shared definitions both read. A change to any of these files trains again.
TRAINING_CODE = ("training", "features/transforms", "core")
# Given candidate rows (customer features, offer_id, event_timestamp), which may be offered.
CandidateFilter = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of a training run; part of the fingerprint that makes reruns idempotent."""

    validation_months: int = 2
    tune_months: int = 1
    max_train_rows: int = 400_000
    max_churn_train_rows: int = 400_000
    max_off_policy_decisions: int = 20_000
    seed: int = 7
    join: str = "tables"  # "tables" (pandas point-in-time join) or "feast"
    # Weigh each logged offer by 1 / its logged propensity, clipped at this weight (0: no
    # weighting), so offers the logging policy rarely showed count as the policy would have.
    propensity_weight_cap: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ModelResult:
    """One model's outcome: its registered version and its validation figures."""

    name: str
    version: tracking.VersionInfo
    metrics: dict[str, float]
    report_markdown: str
    reused: bool = False
    evaluation: RankerEvaluation | ChurnEvaluation | None = None
    fitted: FittedModel | None = None
    validation_frame: pd.DataFrame | None = None
    top_offers: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        primary = PRIMARY_METRIC[self.name]
        value = self.metrics.get(primary)
        state = "unchanged data, settings and code: kept" if self.reused else "registered"
        figure = "n/a" if value is None else f"{value:.4f}"
        return f"{self.name}: {state} version {self.version.version} ({primary} {figure})"


@dataclass
class TrainResult:
    """Both models' results."""

    ranker: ModelResult
    churn: ModelResult

    def describe(self) -> str:
        return "\n".join([self.ranker.describe(), self.churn.describe()])


def train_models(
    data_dir: Path | None = None,
    settings: Settings | None = None,
    config: TrainingConfig | None = None,
    candidate_filter: CandidateFilter | None = None,
    force: bool = False,
) -> TrainResult:
    """Train, evaluate, log and register offer-ranker and churn-risk.

    ``candidate_filter`` narrows the off-policy candidates to the offers a customer may get (the
    decision engine's eligibility, which the training stage cannot import); without it every
    catalog offer valid for the customer's segment and tenure is a candidate. A model whose
    data, training settings and code are all unchanged is kept rather than trained again, unless
    ``force``.
    """
    resolved = settings or get_settings()
    folder = Path(data_dir or resolved.data_dir)
    cfg = config or TrainingConfig(propensity_weight_cap=resolved.propensity_weight_cap)
    key = SkipKey.of(folder, resolved, cfg)
    ranker = train_ranker(folder, resolved, cfg, key, candidate_filter, force=force)
    churn = train_churn(folder, resolved, cfg, key, force=force)
    result = TrainResult(ranker=ranker, churn=churn)
    log.info("%s", result.describe())
    return result


def _input_files(folder: Path) -> list[str]:
    from core.contract import TABLES

    return [table.file_name for table in TABLES if (folder / table.file_name).exists()]


@dataclass(frozen=True)
class SkipKey:
    """What a trained model depends on, in three parts, so a rerun can say which one changed:
    the input tables and catalog, the training settings and model inputs, and the code."""

    data: str
    settings: str
    code: str

    @classmethod
    def of(cls, folder: Path, settings: Settings, cfg: TrainingConfig) -> SkipKey:
        root = Path(__file__).resolve().parent.parent
        code_files = [
            path
            for part in TRAINING_CODE
            for path in sorted((root / part).rglob("*.py"))
            if "__pycache__" not in path.parts
        ]
        return cls(
            data=data.fingerprint(
                [*(folder / name for name in _input_files(folder)), Path(settings.catalog)]
            ),
            settings=data.fingerprint(
                [],
                extra=json.dumps(
                    {"config": cfg.as_dict(), "ranker": RANKER_FEATURES, "churn": CHURN_FEATURES},
                    sort_keys=True,
                ),
            ),
            code=data.fingerprint(code_files),
        )

    def tags(self) -> dict[str, str]:
        return {
            FINGERPRINT_TAG: self.data,
            SETTINGS_FINGERPRINT_TAG: self.settings,
            CODE_FINGERPRINT_TAG: self.code,
        }

    def changed_since(self, tags: Mapping[str, str]) -> list[str]:
        """Which parts differ from a version's tags: "data", "settings", "code"."""
        names = {FINGERPRINT_TAG: "data", SETTINGS_FINGERPRINT_TAG: "settings"}
        names[CODE_FINGERPRINT_TAG] = "code"
        return [names[tag] for tag, value in self.tags().items() if tags.get(tag) != value]


def _already_trained(
    name: str, key: SkipKey, settings: Settings, force: bool = False
) -> ModelResult | None:
    versions = list(tracking.versions(name, settings))
    if force:
        log.info("%s: training a new version (forced)", name)
        return None
    for version in versions:
        if not key.changed_since(version.tags):
            log.info(
                "%s: version %s was trained on the same data, settings and code; not training "
                "again",
                name,
                version.version,
            )
            return ModelResult(
                name=name, version=version, metrics=version.metrics, report_markdown="", reused=True
            )
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        changed = ", ".join(key.changed_since(newest.tags))
        log.info("%s: %s changed since version %s; training", name, changed, newest.version)
    return None


def _fit_set(
    frame: pd.DataFrame, columns: list[str], group: str, weights: np.ndarray | None = None
) -> FitSet:
    return FitSet(
        features=model_matrix(frame, columns, np.float32),
        labels=frame[LABEL].to_numpy(dtype=float),
        groups=frame[group].to_numpy(),
        feature_names=list(columns),
        weights=weights,
    )


def propensity_weights(propensity: pd.Series, cap: float) -> np.ndarray | None:
    """1 / logged propensity, clipped at ``cap`` and scaled to a mean of 1; None when ``cap``
    is 0. Rows without a propensity weigh 1 before scaling."""
    if cap <= 0:
        return None
    logged = propensity.to_numpy(dtype=float)
    weights = np.where(
        np.isfinite(logged) & (logged > 0), 1.0 / np.where(logged > 0, logged, 1.0), 1.0
    )
    weights = np.minimum(weights, cap)
    return weights / weights.mean()


def _champion_on(
    name: str, matrix: np.ndarray, settings: Settings
) -> tuple[str, np.ndarray] | None:
    """The current champion's probabilities on the new validation rows (like-for-like promotion)."""
    try:
        champion = load_champion(name, settings)
    except (LookupError, ModelInputsMismatch) as error:
        log.info("%s: no comparable champion (%s)", name, error)
        return None
    return champion.version.split("/")[-1], champion.predict_proba(matrix)


@dataclass(frozen=True)
class _Periods:
    """A training set and its three periods, split by time."""

    training_set: data.TrainingSet
    train: pd.DataFrame
    tune: pd.DataFrame
    validation: pd.DataFrame
    folder: Path  # the input tables the rows were built from


def _periods(
    name: str,
    build: Callable[..., data.TrainingSet],
    max_train_rows: int | None,
    folder: Path,
    settings: Settings,
    cfg: TrainingConfig,
    timings: dict[str, float],
    step: str,
) -> _Periods:
    with data.timed(timings, f"{step}_rows"):
        training_set = build(
            folder,
            settings,
            cfg.validation_months,
            cfg.tune_months,
            cfg.join,
            timings,
            max_train_rows=max_train_rows,
            seed=cfg.seed,
        )
    log.info("%s rows: %s", name, training_set.counts())
    return _Periods(
        training_set,
        training_set.period(TRAIN),
        training_set.period(TUNE),
        training_set.period(VALIDATION),
        folder,
    )


def _against_champion(
    name: str,
    champion: tuple[str, np.ndarray] | None,
    evaluate: Callable[[np.ndarray], RankerEvaluation | ChurnEvaluation],
    metrics: dict[str, float],
) -> dict[str, str]:
    """The champion's primary metric on the same rows into ``metrics``; the version tags."""
    if champion is None:
        return {}
    champion_version, champion_p = champion
    metrics[CHAMPION_METRIC_PREFIX + PRIMARY_METRIC[name]] = evaluate(champion_p).primary()
    return {COMPARED_VERSION_TAG: champion_version}


def _register(
    name: str,
    features: list[str],
    periods: _Periods,
    fitted: FittedModel,
    evaluation: RankerEvaluation | ChurnEvaluation,
    markdown_of: Callable[[Any, dict[str, Any]], str],
    context: dict[str, Any],
    metrics: dict[str, float],
    version_tags: dict[str, str],
    timings: dict[str, float],
    key: SkipKey,
    settings: Settings,
    top_offers: pd.DataFrame | None = None,
    model_metadata: Mapping[str, Any] | None = None,
) -> ModelResult:
    """Report, figures and registration, the same for both models; ``model_metadata`` is kept
    with the registered model beside its calibrator."""
    training_set = periods.training_set
    evaluation.extra.update(
        model_size_tradeoff=fitted.tradeoff(),
        calibration={"chosen": fitted.calibrator.kind, "candidates": fitted.calibration.scores},
        training_rows=training_set.counts(),
        timings_seconds={k: round(v, 2) for k, v in timings.items()},
    )
    markdown = markdown_of(
        evaluation,
        {
            "feature_service": training_set.feature_service,
            **training_set.split.window(),
            **context,
            "trees": fitted.chosen.trees,
            "num_leaves": fitted.chosen.budget.num_leaves,
            "max_depth": fitted.chosen.budget.max_depth,
            "calibrator": fitted.calibrator.kind,
        },
    )
    metrics.update(
        pred_contrib_ms_3_rows=fitted.chosen.explain_ms,
        trees=float(fitted.chosen.trees),
        train_rows=float(len(periods.train)),
        validation_rows=float(len(periods.validation)),
        **{f"seconds_{k}": v for k, v in timings.items()},
    )
    version = _log(
        name,
        periods,
        fitted,
        evaluation,
        markdown,
        metrics,
        version_tags,
        features,
        key,
        settings,
        model_metadata or {},
    )
    return ModelResult(
        name=name,
        version=version,
        metrics=metrics,
        report_markdown=markdown,
        evaluation=evaluation,
        fitted=fitted,
        validation_frame=periods.validation,
        top_offers=top_offers,
        timings=timings,
    )


def train_ranker(
    folder: Path,
    settings: Settings,
    cfg: TrainingConfig,
    key: SkipKey,
    candidate_filter: CandidateFilter | None = None,
    *,
    force: bool = False,
) -> ModelResult:
    """The acceptance model against the popularity and rules baselines."""
    reused = _already_trained(RANKER_MODEL, key, settings, force)
    if reused is not None:
        return reused
    timings: dict[str, float] = {}
    periods = _periods(
        RANKER_MODEL,
        data.ranker_training_set,
        cfg.max_train_rows,
        folder,
        settings,
        cfg,
        timings,
        "ranker",
    )
    train_rows, tune_rows, validation_rows = periods.train, periods.tune, periods.validation

    with data.timed(timings, "ranker_fit"):
        weights = propensity_weights(train_rows["propensity"], cfg.propensity_weight_cap)
        weighting = (
            "each logged offer once"
            if weights is None
            else f"1 / logged propensity, clipped at {cfg.propensity_weight_cap:g}, mean 1"
        )
        train_set = _fit_set(train_rows, RANKER_FEATURES, "decision_id", weights)
        tune_set = _fit_set(tune_rows, RANKER_FEATURES, "decision_id")
        fitted = fit_ranker(train_set, tune_set, seed=cfg.seed)
        del train_set

    with data.timed(timings, "ranker_evaluate"):
        history = pd.concat([train_rows, tune_rows])
        popularity = PopularityBaseline.fit(history["offer_id"], history[LABEL])
        rules = RulesBaseline.fit(history[RULES_SCORE], history[LABEL])
        validation_matrix = model_matrix(validation_rows, RANKER_FEATURES, np.float32)
        probabilities = {
            MODEL: fitted.predict_proba(validation_matrix),
            POPULARITY: popularity.predict(validation_rows["offer_id"]),
            RULES: rules.predict(validation_rows[RULES_SCORE]),
        }
        catalog = load_catalog(settings.catalog)
        candidates = candidate_rows(
            validation_rows, catalog, cfg.max_off_policy_decisions, cfg.seed
        )
        candidate_set = CANDIDATE_SET
        if candidate_filter is not None:
            candidates = candidates[candidate_filter(candidates)].reset_index(drop=True)
            candidate_set = f"{candidate_set}, and eligible under the decision engine's rules"
        candidates[MODEL] = fitted.predict_proba(
            model_matrix(candidates, RANKER_FEATURES, np.float32)
        )
        candidates[POPULARITY] = popularity.predict(candidates["offer_id"])
        candidates[RULES] = rules.score(candidates[RULES_SCORE])
        scorers = {name: name for name in (MODEL, POPULARITY, RULES)}
        off_policy = off_policy_value(validation_rows, candidates, scorers, candidate_set)
        evaluation = evaluate_ranker(
            validation_rows,
            probabilities,
            {RULES: rules.score(validation_rows[RULES_SCORE])},
            off_policy,
        )
        top_offers = top_candidates(candidates, scorers)
        champion = _champion_on(RANKER_MODEL, validation_matrix, settings)
    metrics = evaluation.flat_metrics()
    version_tags = _against_champion(
        RANKER_MODEL,
        champion,
        lambda champion_p: evaluate_ranker(
            validation_rows,
            {MODEL: champion_p, POPULARITY: probabilities[POPULARITY], RULES: probabilities[RULES]},
            {RULES: rules.score(validation_rows[RULES_SCORE])},
        ),
        metrics,
    )
    return _register(
        RANKER_MODEL,
        RANKER_FEATURES,
        periods,
        fitted,
        evaluation,
        ranker_markdown,
        {
            "objective": fitted.chosen.objective,
            "pred_contrib_ms_3_rows": round(fitted.chosen.explain_ms, 3),
            "training weights": weighting,
        },
        metrics,
        {**version_tags, "training_weights": weighting},
        timings,
        key,
        settings,
        top_offers=top_offers,
        model_metadata={
            "segment_offer_acceptance": segment_offer_acceptance(history),
            INPUT_PROFILE_METADATA: training_input_profile(periods).to_dict(),
        },
    )


def training_input_profile(periods: _Periods) -> InputProfile:
    """The monitored inputs of the training period, as ``offers monitor`` compares served model
    decisions to: one row per logged decision (a decision's offers share its customer's inputs)
    of the customers the model may score."""
    decisions = periods.train.drop_duplicates("decision_id")
    scorable = decisions[model_may_score(decisions)]
    window = periods.training_set.split.window()["train_window"]
    return input_profile(monitored_frame(scorable if len(scorable) else decisions), window)


def top_candidates(candidates: pd.DataFrame, scorers: dict[str, str]) -> pd.DataFrame:
    """Each scorer's top candidate per decision (for the oracle check), one row per pair."""
    parts = []
    for name, column in scorers.items():
        ordered = candidates.sort_values(["decision_id", column], ascending=[True, False])
        top = ordered.drop_duplicates("decision_id")[
            ["decision_id", CUSTOMER_KEY, "offer_id", EVENT_TIMESTAMP]
        ]
        parts.append(top.assign(scorer=name))
    return pd.concat(parts, ignore_index=True)


def train_churn(
    folder: Path, settings: Settings, cfg: TrainingConfig, key: SkipKey, *, force: bool = False
) -> ModelResult:
    """The churn-risk model: customer-months, label "leaves within three months"."""
    reused = _already_trained(CHURN_MODEL, key, settings, force)
    if reused is not None:
        return reused
    timings: dict[str, float] = {}
    periods = _periods(
        CHURN_MODEL,
        data.churn_training_set,
        cfg.max_churn_train_rows,
        folder,
        settings,
        cfg,
        timings,
        "churn",
    )
    train_rows, tune_rows, validation_rows = periods.train, periods.tune, periods.validation
    with data.timed(timings, "churn_fit"):
        fitted = fit_churn(
            _fit_set(train_rows, CHURN_FEATURES, CUSTOMER_KEY),
            _fit_set(tune_rows, CHURN_FEATURES, CUSTOMER_KEY),
            seed=cfg.seed,
        )
    with data.timed(timings, "churn_evaluate"):
        validation_matrix = model_matrix(validation_rows, CHURN_FEATURES, np.float32)
        evaluation = evaluate_churn(validation_rows, fitted.predict_proba(validation_matrix))
        champion = _champion_on(CHURN_MODEL, validation_matrix, settings)
    metrics = evaluation.flat_metrics()
    version_tags = _against_champion(
        CHURN_MODEL,
        champion,
        lambda champion_p: evaluate_churn(validation_rows, champion_p),
        metrics,
    )
    return _register(
        CHURN_MODEL,
        CHURN_FEATURES,
        periods,
        fitted,
        evaluation,
        churn_markdown,
        {},
        metrics,
        version_tags,
        timings,
        key,
        settings,
    )


def _plots(
    name: str, fitted: FittedModel, evaluation: RankerEvaluation | ChurnEvaluation
) -> dict[str, Any]:
    from training import plots

    figures = {
        "plots/feature_importance.png": plots.feature_importance(
            fitted.booster, f"{name}: feature importance (gain)"
        ),
        "plots/calibration_curve.png": plots.calibration_curve(
            {MODEL: evaluation.reliability}, f"{name}: reliability on the validation period"
        ),
        "plots/model_size_tradeoff.png": plots.size_tradeoff(
            fitted.tradeoff(), fitted.primary_metric, f"{name}: quality against explanation cost"
        ),
    }
    if isinstance(evaluation, RankerEvaluation):
        per_slice = {
            slice_name: {scorer: m["ndcg_at_3"] for scorer, m in entry["metrics"].items()}
            for slice_name, entry in evaluation.per_slice.items()
        }
        per_slice["all"] = {scorer: m["ndcg_at_3"] for scorer, m in evaluation.overall.items()}
        figures["plots/metrics_per_slice.png"] = plots.metrics_per_slice(
            per_slice, "NDCG@3", f"{name}: NDCG@3 per slice"
        )
    else:
        per_slice = {s: {MODEL: e["auc"]} for s, e in evaluation.per_slice.items()}
        per_slice["all"] = {MODEL: evaluation.overall["auc"]}
        figures["plots/metrics_per_slice.png"] = plots.metrics_per_slice(
            per_slice, "AUC", f"{name}: AUC per slice"
        )
    return figures


def training_tables(name: str, periods: _Periods, key: SkipKey) -> list[tracking.TrainingTable]:
    """The three periods as MLflow datasets: fitted on (training), early stopping and
    calibration (validation), held out for evaluation (test).

    A period's digest follows from the input tables' and the settings' fingerprints (the skip
    key's), which decide its rows; the source is the folder of input tables they came from.
    """
    source = periods.folder.resolve().as_uri()
    tables = []
    frames = {TRAIN: periods.train, TUNE: periods.tune, VALIDATION: periods.validation}
    for (period, frame), context in zip(frames.items(), tracking.DATASET_CONTEXTS, strict=True):
        tables.append(
            tracking.TrainingTable(
                name=f"{name}-{period}",
                context=context,
                frame=frame,
                source=source,
                digest=data.fingerprint([], extra=f"{key.data} {key.settings} {name} {period}"),
                tags={
                    FINGERPRINT_TAG: key.data,
                    SETTINGS_FINGERPRINT_TAG: key.settings,
                    "period": period,
                    "window": periods.training_set.split.window()[f"{period}_window"],
                },
            )
        )
    return tables


def _log(
    name: str,
    periods: _Periods,
    fitted: FittedModel,
    evaluation: RankerEvaluation | ChurnEvaluation,
    markdown: str,
    metrics: dict[str, float],
    version_tags: dict[str, str],
    columns: list[str],
    key: SkipKey,
    settings: Settings,
    extra_metadata: Mapping[str, Any],
) -> tracking.VersionInfo:
    training_set = periods.training_set
    example = pd.DataFrame(model_matrix(periods.validation.head(3), columns), columns=columns)
    window = training_set.split.window()
    tags = {
        "feature_service": training_set.feature_service,
        **window,
        **key.tags(),
        "objective": fitted.chosen.objective,
        "calibrator": fitted.calibrator.kind,
        "description": (
            f"{name} trained on {window['train_window']}, "
            f"validated on {window['validation_window']}"
        ),
    }
    record = tracking.RunRecord(
        experiment=name,
        model_name=name,
        run_name=f"{name} {time.strftime('%Y-%m-%d %H:%M')}",
        params={
            **fitted.params,
            "feature_service": training_set.feature_service,
            "features": len(columns),
        },
        metrics={k: v for k, v in metrics.items() if v is not None and np.isfinite(v)},
        tags=tags,
        text_artifacts={
            "evaluation/report.md": markdown,
            "evaluation/report.json": to_json(evaluation.as_dict()),
            "evaluation/model_size_tradeoff.json": to_json({"candidates": fitted.tradeoff()}),
        },
        figures=_plots(name, fitted, evaluation),
        input_example=example,
        output_example=fitted.predict_proba(example.to_numpy()),
        model_metadata={
            "calibrator": fitted.calibrator.to_dict(),
            "feature_service": training_set.feature_service,
            "objective": fitted.chosen.objective,
            "served_probability": (
                "calibrator.json applied to model.lgb's raw score "
                "(training.pyfunc_model.CalibratedBooster)"
            ),
            **extra_metadata,
        },
        version_tags={**tags, **version_tags},
        calibrator=fitted.calibrator,
        training_tables=training_tables(name, periods, key),
    )
    return tracking.log_training_run(record, fitted.booster, settings)
