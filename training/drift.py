"""Model monitoring: input drift, prediction drift and the share of degraded answers.

Pure functions over values already read (no I/O), so that ``offers monitor`` and the API's
``/metrics`` compute the same figures.

- **Input drift**: the population stability index (PSI) of each monitored customer input
  (``training.model_inputs.MONITORED_INPUTS``) in recent model decisions against the ranker's
  training window. Numeric inputs are binned at the training window's deciles (the edges are
  fixed at training and stored with the model as its input profile), banded inputs by band;
  missing values have a bin of their own. PSI = Σ (recent − training) × ln(recent / training)
  over the bins' shares.
- **Prediction drift**: per ISO week, the mean acceptance the model predicted for the offers it
  placed first against the share of them accepted, with a Wilson 95 % interval. The model
  predicts acceptance for the first place on the invoice (``SERVED_POSITION``), so only
  first-placed offers are a like-for-like comparison.
- **Degraded share**: the share of answers given without a dependency.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from core.settings import Settings
from training.model_inputs import MONITORED_CATEGORICAL, MONITORED_INPUTS

Status = Literal["ok", "warn", "alert", "too_few"]

# Where a ranker's input profile is kept in its model metadata (MLmodel ``metadata``).
INPUT_PROFILE_METADATA = "input_profile"
PROFILE_BINS = 10
# A bin empty on one side would make ln(a/e) infinite; shares are floored here (the usual choice).
SHARE_FLOOR = 1e-4
CONFIDENCE = 0.95
OTHER = "other"  # a band the training window never saw
TOO_FEW: Status = "too_few"


@dataclass(frozen=True)
class DriftThresholds:
    """When a figure counts as drifted; from ``OFFERS_MONITOR_*`` settings."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    calibration_gap: float = 0.05
    degraded_share: float = 0.05
    min_decisions: int = 100
    min_offers: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftThresholds:
        return cls(
            psi_warn=settings.monitor_psi_warn,
            psi_alert=settings.monitor_psi_alert,
            calibration_gap=settings.monitor_calibration_gap,
            degraded_share=settings.monitor_degraded_share,
            min_decisions=settings.monitor_min_decisions,
            min_offers=settings.monitor_min_offers,
        )


@dataclass(frozen=True)
class FeatureProfile:
    """One input's bins in the training window and each bin's share of its rows.

    Numeric: ``edges`` are the inner cut points; bin i holds values in (edges[i-1], edges[i]],
    the last bin values above the last edge. Banded: one bin per band, then ``other``. Either
    way the last share is that of missing values.
    """

    feature: str
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def banded(self) -> bool:
        return bool(self.categories)

    def counts(self, values: pd.Series) -> np.ndarray:
        """How many of ``values`` fall in each of this profile's bins."""
        if self.banded:
            known = {name: i for i, name in enumerate(self.categories)}
            other, missing = len(self.categories), len(self.categories) + 1
            index = np.array(
                [
                    missing if value is None or value != value else known.get(value, other)
                    for value in values.tolist()
                ],
                dtype=int,
            )
        else:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            index = np.searchsorted(np.asarray(self.edges, dtype=float), numbers, side="left")
            index[np.isnan(numbers)] = len(self.edges) + 1
        return np.bincount(index, minlength=len(self.shares)).astype(float)


@dataclass(frozen=True)
class InputProfile:
    """The monitored inputs of a model's training window: rows, window and each input's bins."""

    window: str
    rows: int
    features: Mapping[str, FeatureProfile]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, stored in the model's metadata."""
        return {
            "window": self.window,
            "rows": self.rows,
            "features": {
                name: {
                    "shares": list(p.shares),
                    "edges": list(p.edges),
                    "categories": list(p.categories),
                }
                for name, p in self.features.items()
            },
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> InputProfile:
        return cls(
            window=str(value["window"]),
            rows=int(value["rows"]),
            features={
                name: FeatureProfile(
                    feature=name,
                    shares=tuple(float(s) for s in spec["shares"]),
                    edges=tuple(float(e) for e in spec.get("edges", ())),
                    categories=tuple(str(c) for c in spec.get("categories", ())),
                )
                for name, spec in value["features"].items()
            },
        )


def profile_of(metadata: Mapping[str, Any] | None) -> InputProfile | None:
    """The input profile stored in a model's metadata, or None when it has none."""
    stored = (metadata or {}).get(INPUT_PROFILE_METADATA)
    return InputProfile.from_dict(stored) if isinstance(stored, Mapping) else None


def input_profile(frame: pd.DataFrame, window: str, bins: int = PROFILE_BINS) -> InputProfile:
    """The profile of ``frame`` (``MONITORED_INPUTS`` columns, one row per decision)."""
    if frame.empty:
        raise ValueError("an input profile needs at least one row")
    features: dict[str, FeatureProfile] = {}
    for name in MONITORED_INPUTS:
        column = frame[name] if name in frame else pd.Series([None] * len(frame))
        if name in MONITORED_CATEGORICAL:
            seen = sorted({value for value in column.tolist() if isinstance(value, str)})
            profile = FeatureProfile(name, shares=(0.0,) * (len(seen) + 2), categories=tuple(seen))
        else:
            numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            known = numbers[~np.isnan(numbers)]
            quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
            edges = tuple(np.unique(np.quantile(known, quantiles)).tolist()) if len(known) else ()
            profile = FeatureProfile(name, shares=(0.0,) * (len(edges) + 2), edges=edges)
        counts = profile.counts(column)
        features[name] = FeatureProfile(
            name,
            shares=tuple((counts / counts.sum()).tolist()),
            edges=profile.edges,
            categories=profile.categories,
        )
    return InputProfile(window=window, rows=len(frame), features=features)


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI of two share vectors over the same bins (0 = the same distribution; ≥ 0 always)."""
    e = np.maximum(np.asarray(expected, dtype=float), SHARE_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=float), SHARE_FLOOR)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs shares over the same bins ({e.shape} against {a.shape})")
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FeatureDrift:
    """One input's PSI over the recent decisions, and what it means."""

    feature: str
    psi: float | None
    status: Status


def input_drift(
    profile: InputProfile, recent: pd.DataFrame, thresholds: DriftThresholds
) -> list[FeatureDrift]:
    """PSI per monitored input of ``recent`` (one row per decision) against ``profile``.

    With fewer than ``thresholds.min_decisions`` rows every status is ``too_few``: a PSI over a
    handful of decisions is noise.
    """
    result = []
    enough = len(recent) >= thresholds.min_decisions
    for name, reference in profile.features.items():
        if recent.empty:
            result.append(FeatureDrift(name, None, "too_few"))
            continue
        column = recent[name] if name in recent else pd.Series([None] * len(recent))
        counts = reference.counts(column)
        value = population_stability_index(reference.shares, counts / counts.sum())
        status: Status = _level(value, thresholds.psi_warn, thresholds.psi_alert)
        result.append(FeatureDrift(name, round(value, 4), status if enough else "too_few"))
    return result


def _level(value: float, warn: float, alert: float) -> Status:
    if value >= alert:
        return "alert"
    return "warn" if value >= warn else "ok"


@dataclass(frozen=True)
class Calibration:
    """Predicted against observed acceptance of first-placed offers in one period."""

    period: str
    offers: int
    accepted: int
    predicted: float | None
    observed: float | None
    observed_low: float | None
    observed_high: float | None
    gap: float | None  # observed − predicted
    status: Status


@dataclass(frozen=True)
class Outcomes:
    """First-placed offers of one day: how many, their predicted acceptances summed, and how
    many were accepted. The decision log sums them per day, so a period of any length is read
    as a few rows."""

    day: dt.date
    offers: int
    predicted_sum: float
    accepted: int


def calibration(
    period: str, offers: int, predicted_sum: float, accepted: int, thresholds: DriftThresholds
) -> Calibration:
    """The period's mean prediction, observed share with its Wilson interval, and the gap.

    ``alert`` when the gap is larger than ``thresholds.calibration_gap`` and the interval leaves
    the prediction out; ``warn`` when the gap is that large but within sampling noise.
    """
    n, k = offers, accepted
    if n == 0:
        return Calibration(period, 0, 0, None, None, None, None, None, TOO_FEW)
    if not 0 <= k <= n:
        raise ValueError(f"{k} accepted of {n} offers")
    mean = predicted_sum / n
    interval = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    observed, gap = k / n, k / n - mean
    status: Status = "ok"
    if abs(gap) > thresholds.calibration_gap:
        outside = not interval.low <= mean <= interval.high
        status = "alert" if outside else "warn"
    if n < thresholds.min_offers:
        status = TOO_FEW
    return Calibration(
        period,
        n,
        k,
        round(mean, 4),
        round(observed, 4),
        round(float(interval.low), 4),
        round(float(interval.high), 4),
        round(gap, 4),
        status,
    )


def iso_week(moment: dt.date) -> str:
    """``2026-W48``: the ISO week a day falls in."""
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def pooled(period: str, days: Sequence[Outcomes], thresholds: DriftThresholds) -> Calibration:
    """:func:`calibration` of the offers of ``days`` taken together."""
    return calibration(
        period,
        sum(day.offers for day in days),
        sum(day.predicted_sum for day in days),
        sum(day.accepted for day in days),
        thresholds,
    )


def prediction_drift(days: Sequence[Outcomes], thresholds: DriftThresholds) -> list[Calibration]:
    """:func:`calibration` per ISO week of the days, oldest first."""
    weeks: dict[str, list[Outcomes]] = {}
    for day in sorted(days, key=lambda d: d.day):
        weeks.setdefault(iso_week(day.day), []).append(day)
    return [pooled(week, found, thresholds) for week, found in weeks.items()]


@dataclass(frozen=True)
class DegradedShare:
    """Answers given without a dependency, of all answers logged in the period."""

    answers: int
    degraded: int
    share: float | None
    status: Status


def degraded_share(answers: int, degraded: int, thresholds: DriftThresholds) -> DegradedShare:
    if answers == 0:
        return DegradedShare(0, 0, None, "too_few")
    share = degraded / answers
    status: Status = "alert" if share > thresholds.degraded_share else "ok"
    return DegradedShare(answers, degraded, round(share, 4), status)


@dataclass(frozen=True)
class MonitoringReport:
    """Everything ``offers monitor`` shows and ``/metrics`` exposes, for one period."""

    since: str
    until: str
    model_version: str | None
    profile_window: str | None
    decisions_with_inputs: int
    inputs: list[FeatureDrift]
    weeks: list[Calibration]
    overall: Calibration
    degraded: DegradedShare
    thresholds: DriftThresholds
    notes: list[str] = field(default_factory=list)

    @property
    def advice(self) -> str | None:
        """One line saying what to do when a threshold is crossed; None when none is."""
        drifted = [d.feature for d in self.inputs if d.status == "alert"]
        parts = []
        if drifted:
            more = f" and {len(drifted) - 5} more" if drifted[5:] else ""
            shown = ", ".join(drifted[:5]) + more
            parts.append(f"inputs drifted (PSI ≥ {self.thresholds.psi_alert:g}: {shown})")
        if self.overall.status == "alert" or any(w.status == "alert" for w in self.weeks):
            parts.append(
                f"predicted acceptance is off the observed by more than "
                f"{self.thresholds.calibration_gap * 100:g} points"
            )
        advice = f"Retrain: {'; '.join(parts)}. Run `offers retrain`." if parts else None
        if self.degraded.status == "alert":
            share = self.degraded.share or 0.0
            degraded = (
                f"{share:.1%} of answers were degraded (threshold "
                f"{self.thresholds.degraded_share:.0%}): check the feature store and the registry."
            )
            advice = f"{advice} {degraded}" if advice else degraded
        return advice

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["advice"] = self.advice
        return _finite(values)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a non-finite number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
