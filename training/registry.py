"""Registered models: promotion to ``champion``, rollback, the versions' overview, loading.

Promotion compares the newest version (the candidate) with the champion on the model's primary
metric: NDCG@3 for ``offer-ranker``, AUC for ``churn-risk``. The candidate must be better by
``settings.promote_margin``. When training scored the champion on the candidate's own validation
rows, that like-for-like figure is used; otherwise the champion's own logged figure is.

A chosen version (``offers promote --version N``) passes the same check and, when the served
policy's values can be compared (:func:`served_comparison`: on the candidate's own decisions, or
both measured with the same objective), the retrain's served-policy check (:func:`promotion_gate`);
``--force`` skips both and is recorded. Every promotion moves the aliases in
:func:`_move_champion` alone: ``previous_champion`` to the version that was champion, then
``champion``, then the record on the promoted version's tags. :func:`rollback_models` moves
``champion`` back to ``previous_champion`` and ``previous_champion`` to the version it left, so a
second rollback undoes the first.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from core.settings import Settings, get_settings
from training import tracking
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES
from training.served_model import LoadedModel, load_model_files, model_files

log = logging.getLogger(__name__)

RANKER_MODEL = "offer-ranker"
CHURN_MODEL = "churn-risk"
MODEL_NAMES = (RANKER_MODEL, CHURN_MODEL)
PRIMARY_METRIC = {RANKER_MODEL: "val_ndcg_at_3", CHURN_MODEL: "val_auc"}
EXPECTED_FEATURES = {RANKER_MODEL: RANKER_FEATURES, CHURN_MODEL: CHURN_FEATURES}
# Tags set by training on a candidate when it also scored the champion on its validation rows.
COMPARED_VERSION_TAG = "compared_with_champion"
CHAMPION_METRIC_PREFIX = "champion_"
# The served policy's value per invoice under the names `served_metrics`
# (pipelines/policy_evaluation.py) logs it with on a candidate ranker's run, in the order
# `served_value` prefers them: the objective's value on a simulated world, else the doubly robust
# value of the first offer.
SERVED_VALUE_METRICS = ("served_model_objective_value_sek", "served_model_dr")
# Set by the retrain on a candidate ranker whose served policy it also evaluated with the champion
# on the same logged decisions; the champion's figures are then on the candidate's run, prefixed.
SERVED_COMPARED_VERSION_TAG = "served_compared_with_champion"
# The objective a version's served value was measured with (Objective.valuation()): values of
# different objectives are not compared.
SERVED_OBJECTIVE_TAG = "served_objective"
# A candidate ranker is not promoted when the served policy's value falls below the champion's by
# more than this share: the offline metric alone does not decide what invoices show.
SERVED_VALUE_TOLERANCE = 0.02
# Registry tags hold at most 5,000 characters; a reason is cut well before.
REASON_LIMIT = 1_000


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
    forced: bool = False

    @property
    def already_champion(self) -> bool:
        """Nothing to do: the version asked for is the champion already."""
        return (
            not self.promoted
            and self.candidate_version is not None
            and self.candidate_version == self.champion_version
        )

    def describe(self) -> str:
        verdict = "forced" if self.forced else "promoted" if self.promoted else "kept"
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


def served_policy_blocks(candidate: float | None, champion: float | None) -> str | None:
    """Why a candidate ranker must not be promoted on the served policy's value, or None."""
    if candidate is None or champion is None:
        return None
    if candidate < champion - SERVED_VALUE_TOLERANCE * abs(champion):
        below = (champion - candidate) / abs(champion)
        return (
            f"its served policy is worth {candidate:.4f} per invoice against the champion's "
            f"{champion:.4f} ({below:.1%} less; the tolerance is {SERVED_VALUE_TOLERANCE:.0%})"
        )
    return None


@dataclass(frozen=True)
class ServedComparison:
    """The served policy's value of a candidate and of the champion, as logged in the registry."""

    metric: str
    candidate: float
    champion: float
    like_for_like: bool


def served_comparison(
    candidate: tracking.VersionInfo, current: tracking.VersionInfo
) -> ServedComparison | None:
    """Both served-policy values under the first name of ``SERVED_VALUE_METRICS`` logged for both,
    or None. The champion's figure on the candidate's run (the same logged decisions) is preferred
    to the one on its own run (another month, perhaps); the latter only when both were measured
    with the same objective (:data:`SERVED_OBJECTIVE_TAG`), else None."""
    like_for_like = candidate.tags.get(SERVED_COMPARED_VERSION_TAG) == current.version
    if not like_for_like and _objectives_differ(candidate, current):
        return None
    return _both_served_values(candidate, current, like_for_like)


def _both_served_values(
    candidate: tracking.VersionInfo, current: tracking.VersionInfo, like_for_like: bool
) -> ServedComparison | None:
    for metric in SERVED_VALUE_METRICS:
        candidate_value = candidate.metrics.get(metric)
        champion_value = (
            candidate.metrics.get(CHAMPION_METRIC_PREFIX + metric)
            if like_for_like
            else current.metrics.get(metric)
        )
        if _finite(candidate_value) and _finite(champion_value):
            return ServedComparison(metric, candidate_value, champion_value, like_for_like)
    return None


def _objectives_differ(candidate: tracking.VersionInfo, current: tracking.VersionInfo) -> bool:
    """Whether the two versions' served values were measured with different (or unknown)
    objectives."""
    objective = candidate.tags.get(SERVED_OBJECTIVE_TAG)
    return objective is None or objective != current.tags.get(SERVED_OBJECTIVE_TAG)


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def promotion_gate(
    model: str,
    candidate: tracking.VersionInfo,
    current: tracking.VersionInfo | None,
    margin: float,
) -> PromotionDecision:
    """The checks of automatic promotion for a chosen version: the primary metric against the
    champion's by the margin (:func:`decide_promotion`), then, when the served policy's values
    can be compared (:func:`served_comparison`), the retrain's served-policy tolerance
    (:func:`served_policy_blocks`). A refusal names the check that failed and by how much; values
    that cannot be compared are named in the reason of a promotion."""
    decision = decide_promotion(model, candidate, current, margin)
    if decision.already_champion:
        return decision
    if not decision.promoted:
        shortfall = ""
        if decision.candidate_value is not None and decision.champion_value is not None:
            missing = decision.champion_value + margin - decision.candidate_value
            shortfall = f" (short by {missing:.4f})"
        return replace(
            decision, reason=f"primary-metric check failed{shortfall}: {decision.reason}"
        )
    served = None if current is None else served_comparison(candidate, current)
    blocked = None if served is None else served_policy_blocks(served.candidate, served.champion)
    if (
        served is None
        and current is not None
        and _both_served_values(candidate, current, like_for_like=False) is not None
    ):
        return replace(
            decision,
            reason=f"{decision.reason}; served values not compared: the champion's was measured "
            "with another objective (or an unknown one) and not on the candidate's decisions",
        )
    if served is None or blocked is None:
        return decision
    where = "on the same logged decisions" if served.like_for_like else "each as logged"
    return replace(
        decision,
        promoted=False,
        reason=f"served-policy check failed ({served.metric}, {where}): {blocked}; "
        f"the primary metric passed: {decision.reason}",
    )


@dataclass(frozen=True)
class PromotionRecord:
    """Who promoted a version and why; kept on the version's tags."""

    by: str
    reason: str
    forced: bool = False


def operator() -> str:
    """Whom a promotion or rollback is recorded as done by when ``--by`` does not say."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return "unknown"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _model_names(only: str | None) -> tuple[str, ...]:
    names = MODEL_NAMES if only is None else (only,)
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(MODEL_NAMES)}")
    return names


def _move_champion(name: str, version: str, record: PromotionRecord, settings: Settings) -> None:
    """The one place a promotion moves aliases and records itself.

    ``previous_champion`` moves first, to the version that was champion, so that a promotion cut
    short between the two leaves ``champion`` where it was and the way back known.
    """
    previous = tracking.champion_alias(name, settings)
    if previous == version:
        return
    if previous is not None:
        tracking.set_alias(name, tracking.PREVIOUS_CHAMPION_ALIAS, previous, settings)
    tracking.set_champion(name, version, settings)
    tracking.set_version_tags(
        name,
        version,
        {
            "promoted_at": _now(),
            "promoted_by": record.by,
            "promotion_reason": record.reason[:REASON_LIMIT],
            "forced": "true" if record.forced else "false",
            "promoted_from": previous or "",
        },
        settings,
    )


def promote_models(
    only: str | None = None,
    settings: Settings | None = None,
    *,
    by: str | None = None,
    reason: str | None = None,
) -> list[PromotionDecision]:
    """Move ``champion`` to each model's newest version when it beats the champion by the margin."""
    resolved = settings or get_settings()
    decisions = []
    for name in _model_names(only):
        candidate = tracking.latest_version(name, resolved)
        current = tracking.champion(name, resolved)
        decision = decide_promotion(name, candidate, current, resolved.promote_margin)
        if decision.promoted and decision.candidate_version is not None:
            record = PromotionRecord(by or operator(), reason or decision.reason)
            _move_champion(name, decision.candidate_version, record, resolved)
        log.info("%s", decision.describe())
        decisions.append(decision)
    return decisions


class UnknownVersion(LookupError):
    """No such version of a registered model; the message lists the versions there are."""


def promote_version(
    name: str,
    version: str,
    settings: Settings | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    by: str | None = None,
) -> PromotionDecision:
    """Move ``champion`` to a chosen version when it passes :func:`promotion_gate`; ``force``
    skips the gate and needs a reason. Refused decisions come back with ``promoted`` False.

    Raises UnknownVersion for a version that does not exist, and ModelInputsMismatch for one that
    reads other inputs than this code builds (serving would refuse it, forced or not).
    """
    resolved = settings or get_settings()
    _model_names(name)
    if force and not (reason or "").strip():
        raise ValueError("a forced promotion needs a reason (--reason), recorded on the version")
    known = tracking.version_numbers(name, resolved)
    if version not in known:
        listed = ", ".join(known) if known else "none registered"
        raise UnknownVersion(f"no version {version} of {name}; versions: {listed}")
    candidate = tracking.get_version(name, version, resolved)
    current = tracking.champion(name, resolved)
    decision = promotion_gate(name, candidate, current, resolved.promote_margin)
    if decision.already_champion or not (decision.promoted or force):
        log.info("%s", decision.describe())
        return decision
    load_version(name, version, resolved)  # raises ModelInputsMismatch before any alias moves
    if force:
        verdict = "passed" if decision.promoted else "refused"
        decision = replace(
            decision,
            promoted=True,
            forced=True,
            reason=f"checks skipped; they would have {verdict}: {decision.reason}",
        )
    record = PromotionRecord(by or operator(), (reason or "").strip() or decision.reason, force)
    _move_champion(name, version, record, resolved)
    log.info("%s", decision.describe())
    return decision


@dataclass(frozen=True)
class Rollback:
    """``champion`` moved back from one version to another."""

    model: str
    from_version: str
    to_version: str

    def describe(self) -> str:
        return f"{self.model}: champion {self.from_version} → {self.to_version} (rolled back)"


class RollbackRefused(ValueError):
    """A model's champion cannot be rolled back; the message says why."""


def _rollback_target(name: str, settings: Settings) -> tuple[str, str]:
    """The champion and the previous champion it goes back to, or RollbackRefused."""
    current = tracking.champion_alias(name, settings)
    previous = tracking.alias_version(name, tracking.PREVIOUS_CHAMPION_ALIAS, settings)
    if current is None:
        raise RollbackRefused(f"{name} has no champion to roll back")
    if previous is None:
        raise RollbackRefused(
            f"{name} has no previous_champion to roll back to (champion {current} is the only "
            f"one it has had); `offers promote --model {name} --version N` promotes a chosen one"
        )
    if previous == current:
        raise RollbackRefused(
            f"{name}: previous_champion and champion are both version {current}; nothing to "
            "roll back to"
        )
    try:
        load_version(name, previous, settings)
    except ModelInputsMismatch as error:
        raise RollbackRefused(
            f"{error}; serving would refuse it, so champion stays {current}"
        ) from error
    return current, previous


def rollback_models(
    only: str | None = None,
    settings: Settings | None = None,
    *,
    by: str | None = None,
    reason: str | None = None,
) -> list[Rollback]:
    """Move each model's ``champion`` back to its ``previous_champion`` and ``previous_champion``
    to the version it left; record the rollback on the version that is champion again.

    Every model is checked before any alias moves: a refusal for one (RollbackRefused, all the
    reasons in its message) leaves both models as they were.
    """
    resolved = settings or get_settings()
    targets: dict[str, tuple[str, str]] = {}
    refusals: list[str] = []
    for name in _model_names(only):
        try:
            targets[name] = _rollback_target(name, resolved)
        except RollbackRefused as refused:
            refusals.append(str(refused))
    if refusals:
        hint = "; nothing rolled back" + ("" if only else " (--model rolls back one model alone)")
        raise RollbackRefused("; ".join(refusals) + hint)
    rollbacks = []
    for name, (current, previous) in targets.items():
        # champion first: it is what serving follows; previous_champion then keeps the way back.
        tracking.set_champion(name, previous, resolved)
        tracking.set_version_tags(
            name,
            previous,
            {
                "rolled_back_at": _now(),
                "rolled_back_by": by or operator(),
                "rolled_back_from": current,
                "rollback_reason": (reason or "").strip()[:REASON_LIMIT],
            },
            resolved,
        )
        tracking.set_alias(name, tracking.PREVIOUS_CHAMPION_ALIAS, current, resolved)
        rollback = Rollback(name, current, previous)
        log.info("%s", rollback.describe())
        rollbacks.append(rollback)
    return rollbacks


@dataclass(frozen=True)
class VersionSummary:
    """One line of ``offers models list``."""

    model: str
    version: str
    aliases: tuple[str, ...]
    metric: str
    metric_value: float | None
    served_metric: str | None
    served_value: float | None
    train_window: str | None
    validation_window: str | None
    created_at: str | None
    promotion: dict[str, Any] | None
    rollback: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "aliases": list(self.aliases),
            "metric": self.metric,
            "metric_value": self.metric_value,
            "served_metric": self.served_metric,
            "served_value": self.served_value,
            "train_window": self.train_window,
            "validation_window": self.validation_window,
            "created_at": self.created_at,
            "promotion": self.promotion,
            "rollback": self.rollback,
        }


def summarize_versions(name: str, settings: Settings | None = None) -> list[VersionSummary]:
    """Every version of a model, newest first, with what choosing a champion needs."""
    _model_names(name)
    metric = PRIMARY_METRIC[name]
    return [_summary(info, metric) for info in tracking.versions(name, settings)]


def _summary(info: tracking.VersionInfo, metric: str) -> VersionSummary:
    metric_value = info.metrics.get(metric)
    served = next((m for m in SERVED_VALUE_METRICS if _finite(info.metrics.get(m))), None)
    tags = info.tags
    promotion = None
    if "promoted_at" in tags:
        promotion = {
            "at": tags["promoted_at"],
            "by": tags.get("promoted_by"),
            "reason": tags.get("promotion_reason"),
            "forced": tags.get("forced") == "true",
            "from": tags.get("promoted_from") or None,
        }
    rollback = None
    if "rolled_back_at" in tags:
        rollback = {
            "at": tags["rolled_back_at"],
            "by": tags.get("rolled_back_by"),
            "from": tags.get("rolled_back_from"),
            "reason": tags.get("rollback_reason") or None,
        }
    created = (
        None
        if info.created_ms is None
        else dt.datetime.fromtimestamp(info.created_ms / 1000, dt.UTC).isoformat(timespec="seconds")
    )
    return VersionSummary(
        model=info.name,
        version=info.version,
        aliases=info.aliases,
        metric=metric,
        metric_value=metric_value if _finite(metric_value) else None,
        served_metric=served,
        served_value=None if served is None else info.metrics[served],
        train_window=tags.get("train_window"),
        validation_window=tags.get("validation_window"),
        created_at=created,
        promotion=promotion,
        rollback=rollback,
    )


class ModelInputsMismatch(ValueError):
    """The registered model reads other inputs than this code builds; it must not be served."""


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
    """Load one registered version (the champion, or a challenger named ``model:<version>``):
    the booster and calibrator its pyfunc wraps, or for a version logged in the LightGBM flavour
    before there was one, its ``model.lgb`` and the calibrator in its metadata."""
    directory = tracking.model_directory(name, version, settings)
    loaded = load_model_files(model_files(directory), f"{name}/{version}")
    expected = EXPECTED_FEATURES.get(name)
    if expected is not None and loaded.feature_names != list(expected):
        missing = sorted(set(expected) - set(loaded.feature_names))
        extra = sorted(set(loaded.feature_names) - set(expected))
        raise ModelInputsMismatch(
            f"{name}/{version} reads other inputs than this code builds "
            f"(missing {missing[:5]}, extra {extra[:5]}, order may differ)"
        )
    return loaded
