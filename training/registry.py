"""Registered models: promotion of a new version to ``champion`` and loading the champion.

Promotion compares the newest version (the candidate) with the champion on the model's primary
metric: NDCG@3 for ``offer-ranker``, AUC for ``churn-risk``. The candidate must be better by
``settings.promote_margin``. When training scored the champion on the candidate's own validation
rows, that like-for-like figure is used; otherwise the champion's own logged figure is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from core.settings import Settings, get_settings
from training import tracking
from training.calibration import Calibrator
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES

log = logging.getLogger(__name__)

RANKER_MODEL = "offer-ranker"
CHURN_MODEL = "churn-risk"
MODEL_NAMES = (RANKER_MODEL, CHURN_MODEL)
PRIMARY_METRIC = {RANKER_MODEL: "val_ndcg_at_3", CHURN_MODEL: "val_auc"}
EXPECTED_FEATURES = {RANKER_MODEL: RANKER_FEATURES, CHURN_MODEL: CHURN_FEATURES}
# Tags set by training on a candidate when it also scored the champion on its validation rows.
COMPARED_VERSION_TAG = "compared_with_champion"
CHAMPION_METRIC_PREFIX = "champion_"


@dataclass(frozen=True)
class PromotionDecision:
    """What ``offers promote`` decided for one model, and why."""

    model: str
    promoted: bool
    reason: str
    metric: str
    candidate_version: str | None = None
    champion_version: str | None = None
    candidate_value: float | None = None
    champion_value: float | None = None
    margin: float = 0.0

    def describe(self) -> str:
        verdict = "promoted" if self.promoted else "kept"
        champion = self.champion_version or "none"
        if self.promoted:
            head = f"{self.model}: version {self.candidate_version} is now champion"
        else:
            head = f"{self.model}: champion stays {champion}"
        return f"{head} ({verdict}: {self.reason})"


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def decide_promotion(
    model: str,
    candidate: tracking.VersionInfo | None,
    current: tracking.VersionInfo | None,
    margin: float,
) -> PromotionDecision:
    """The promotion rule alone, without touching the registry."""
    metric = PRIMARY_METRIC[model]
    if candidate is None:
        return PromotionDecision(model, False, "no registered version to promote", metric)
    candidate_value = candidate.metrics.get(metric)
    base = {
        "metric": metric,
        "candidate_version": candidate.version,
        "candidate_value": candidate_value,
        "margin": margin,
    }
    if candidate_value is None or math.isnan(candidate_value):
        return PromotionDecision(
            model,
            False,
            f"version {candidate.version} has no {metric}; it cannot be compared",
            champion_version=current.version if current else None,
            **base,  # type: ignore[arg-type]
        )
    if current is None:
        return PromotionDecision(
            model,
            True,
            f"no champion yet; version {candidate.version} has {metric} {_value(candidate_value)}",
            **base,  # type: ignore[arg-type]
        )
    if current.version == candidate.version:
        return PromotionDecision(
            model,
            False,
            f"version {candidate.version} is already champion",
            champion_version=current.version,
            champion_value=candidate_value,
            **base,  # type: ignore[arg-type]
        )
    like_for_like = candidate.tags.get(COMPARED_VERSION_TAG) == current.version
    champion_value = (
        candidate.metrics.get(CHAMPION_METRIC_PREFIX + metric)
        if like_for_like
        else current.metrics.get(metric)
    )
    where = (
        "on the candidate's validation rows" if like_for_like else "as logged when it was trained"
    )
    if champion_value is None or math.isnan(champion_value):
        return PromotionDecision(
            model,
            True,
            f"champion {current.version} has no {metric}; candidate has {_value(candidate_value)}",
            champion_version=current.version,
            **base,  # type: ignore[arg-type]
        )
    better = candidate_value >= champion_value + margin
    comparison = (
        f"{metric} {_value(candidate_value)} against champion {current.version}'s "
        f"{_value(champion_value)} {where}, margin {margin:g}"
    )
    reason = (
        comparison
        if better
        else f"candidate {candidate.version} is not better by the margin: {comparison}"
    )
    return PromotionDecision(
        model,
        better,
        reason,
        champion_version=current.version,
        champion_value=champion_value,
        **base,  # type: ignore[arg-type]
    )


def promote_models(
    only: str | None = None, settings: Settings | None = None
) -> list[PromotionDecision]:
    """Move ``champion`` to each model's newest version when it beats the champion by the margin."""
    resolved = settings or get_settings()
    names = MODEL_NAMES if only is None else (only,)
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(MODEL_NAMES)}")
    decisions = []
    for name in names:
        candidate = tracking.latest_version(name, resolved)
        current = tracking.champion(name, resolved)
        decision = decide_promotion(name, candidate, current, resolved.promote_margin)
        if decision.promoted and decision.candidate_version is not None:
            tracking.set_champion(name, decision.candidate_version, resolved)
        log.info("%s", decision.describe())
        decisions.append(decision)
    return decisions


class ModelInputsMismatch(ValueError):
    """The registered model reads other inputs than this code builds; it must not be served."""


@dataclass
class LoadedModel:
    """A champion booster ready for serving, with its calibrator.

    ``predict_proba`` is the served probability: the booster's raw score through the calibrator.
    Contributions (``pred_contrib``) are in raw-score units, as LightGBM gives them.
    """

    booster: lgb.Booster
    version: str
    feature_names: list[str]
    calibrator: Calibrator = field(default_factory=Calibrator)
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(features, raw_score=True, num_threads=1)
        return self.calibrator.apply(np.asarray(raw, dtype=float))


def champion_version(name: str, settings: Settings | None = None) -> str | None:
    """``offer-ranker/3`` for the current champion, or None when there is none.

    One alias lookup, cheap enough for every serving worker to ask every few seconds; a registry
    that does not answer raises (it is not "no champion").
    """
    version = tracking.champion_alias(name, settings)
    return None if version is None else f"{name}/{version}"


def load_champion(name: str, settings: Settings | None = None) -> LoadedModel:
    """Load the version carrying the ``champion`` alias straight from its model file.

    Raises LookupError when there is no champion, and ModelInputsMismatch when its inputs differ
    from what ``training.model_inputs`` builds today. A registry that does not answer raises its
    own error, never LookupError: an outage must not read as "no champion, rules decide".
    """
    resolved = settings or get_settings()
    version = tracking.champion_alias(name, resolved)
    if version is None:
        raise LookupError(
            f"{name} has no champion version; run `offers train` and `offers promote`"
        )
    return load_version(name, version, resolved)


def load_version(name: str, version: str, settings: Settings | None = None) -> LoadedModel:
    """Load one registered version (the champion, or a challenger named ``model:<version>``)."""
    directory = tracking.model_directory(name, version, settings)
    booster = lgb.Booster(model_file=str(directory / tracking.MODEL_FILE))
    metadata = tracking.model_metadata(directory)
    feature_names = list(booster.feature_name())
    expected = EXPECTED_FEATURES.get(name)
    if expected is not None and feature_names != list(expected):
        missing = sorted(set(expected) - set(feature_names))
        extra = sorted(set(feature_names) - set(expected))
        raise ModelInputsMismatch(
            f"{name}/{version} reads other inputs than this code builds "
            f"(missing {missing[:5]}, extra {extra[:5]}, order may differ)"
        )
    return LoadedModel(
        booster=booster,
        version=f"{name}/{version}",
        feature_names=feature_names,
        calibrator=Calibrator.from_dict(metadata.get("calibrator", {"kind": "sigmoid"})),
        metadata=metadata,
    )
