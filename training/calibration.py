"""Probability calibration of a booster's raw score, kept as plain JSON next to the model.

A served acceptance probability is ``calibrate(booster.predict(X, raw_score=True), calibrator)``.
The calibrator maps the raw margin (log-odds for a binary booster, an arbitrary score for
LambdaRank) to a probability:

- ``sigmoid``: the booster's own probability, ``1 / (1 + exp(-raw))`` (a binary objective that is
  already calibrated),
- ``platt``: ``1 / (1 + exp(-(a * raw + b)))``, fitted by logistic regression on held-out rows,
- ``isotonic``: a monotone step function given by knots, interpolated linearly between them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from training.metrics import expected_calibration_error, log_loss

CalibratorKind = Literal["sigmoid", "platt", "isotonic"]
CALIBRATOR_KINDS: tuple[CalibratorKind, ...] = ("sigmoid", "platt", "isotonic")
# Probabilities never reach exactly 0 or 1: an offer is never certain to be accepted or refused.
PROBABILITY_FLOOR = 1e-4
ISOTONIC_MAX_BINS = 1000
SIMPLER_TOLERANCE = 1e-4


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -40.0, 40.0)))


@dataclass(frozen=True)
class Calibrator:
    """Maps raw booster scores to calibrated probabilities; serialisable as JSON."""

    kind: CalibratorKind = "sigmoid"
    a: float = 1.0
    b: float = 0.0
    knots_x: tuple[float, ...] = field(default_factory=tuple)
    knots_y: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in CALIBRATOR_KINDS:
            raise ValueError(f"unknown calibrator kind {self.kind!r}")
        if self.kind == "isotonic":
            if len(self.knots_x) == 0 or len(self.knots_x) != len(self.knots_y):
                raise ValueError("an isotonic calibrator needs knots_x and knots_y of one length")
            if np.any(np.diff(self.knots_x) < 0) or np.any(np.diff(self.knots_y) < 0):
                raise ValueError("isotonic knots must be non-decreasing")

    def apply(self, raw_scores: np.ndarray | pd.Series) -> np.ndarray:
        """Calibrated probabilities in [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]."""
        raw = np.asarray(raw_scores, dtype=float)
        if self.kind == "sigmoid":
            probability = _sigmoid(raw)
        elif self.kind == "platt":
            probability = _sigmoid(self.a * raw + self.b)
        else:
            probability = np.interp(raw, self.knots_x, self.knots_y)
        return np.clip(probability, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"kind": self.kind}
        if self.kind == "platt":
            payload.update(a=self.a, b=self.b)
        if self.kind == "isotonic":
            payload.update(knots_x=list(self.knots_x), knots_y=list(self.knots_y))
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Calibrator:
        return cls(
            kind=payload.get("kind", "sigmoid"),
            a=float(payload.get("a", 1.0)),
            b=float(payload.get("b", 0.0)),
            knots_x=tuple(float(x) for x in payload.get("knots_x", ())),
            knots_y=tuple(float(y) for y in payload.get("knots_y", ())),
        )

    def write(self, path: Path) -> Path:
        """The calibrator as a JSON file: the registered model keeps it next to the booster."""
        path.write_text(json.dumps(self.to_dict(), sort_keys=True), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> Calibrator:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


IDENTITY = Calibrator()


def calibrate(
    raw_scores: np.ndarray | pd.Series, calibrator: Calibrator | Mapping[str, Any] | None
) -> np.ndarray:
    """Probabilities from raw booster scores; ``None`` means the booster's own sigmoid."""
    if calibrator is None:
        return IDENTITY.apply(raw_scores)
    if not isinstance(calibrator, Calibrator):
        calibrator = Calibrator.from_dict(calibrator)
    return calibrator.apply(raw_scores)


def fit_platt(raw_scores: np.ndarray, labels: np.ndarray, iterations: int = 50) -> Calibrator:
    """Logistic regression of the label on the raw score (Newton's method, tiny ridge)."""
    x = np.asarray(raw_scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("raw_scores and labels must be non-empty and of one length")
    # Platt's targets keep the fit finite when the classes separate perfectly.
    positives, negatives = y.sum(), len(y) - y.sum()
    target = np.where(y == 1.0, (positives + 1) / (positives + 2), 1.0 / (negatives + 2))
    a, b = 1.0, 0.0
    ridge = 1e-6
    for _ in range(iterations):
        p = _sigmoid(a * x + b)
        weight = p * (1 - p)
        gradient = np.array([np.sum((p - target) * x), np.sum(p - target)])
        hessian = np.array(
            [
                [np.sum(weight * x * x) + ridge, np.sum(weight * x)],
                [np.sum(weight * x), np.sum(weight) + ridge],
            ]
        )
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return Calibrator(kind="platt", a=float(a), b=float(b))


def _pool_adjacent_violators(y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) fit of ``y`` in the given order."""
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for value, w in zip(y, weight, strict=True):
        values.append(float(value))
        weights.append(float(w))
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            total = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / total
            size = sizes[-2] + sizes[-1]
            values[-2:] = [merged]
            weights[-2:] = [total]
            sizes[-2:] = [size]
    return np.repeat(values, sizes)


def fit_isotonic(
    raw_scores: np.ndarray, labels: np.ndarray, max_bins: int = ISOTONIC_MAX_BINS
) -> Calibrator:
    """Isotonic regression of the label on the raw score over at most ``max_bins`` quantile bins."""
    x = np.asarray(raw_scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("raw_scores and labels must be non-empty and of one length")
    order = np.argsort(x, kind="stable")
    x_sorted, y_sorted = x[order], y[order]
    # Quantile bins keep the fit fast on millions of rows and its knots few enough for JSON.
    bin_index = np.minimum((np.arange(len(x)) * max_bins) // len(x), max_bins - 1)
    frame = pd.DataFrame({"bin": bin_index, "x": x_sorted, "y": y_sorted})
    binned = frame.groupby("bin").agg(x=("x", "mean"), y=("y", "sum"), n=("y", "size"))
    # Equal raw scores must share one fitted value.
    binned = binned.groupby("x", as_index=False)[["y", "n"]].sum()
    binned["y"] = binned["y"] / binned["n"]
    fitted = _pool_adjacent_violators(binned["y"].to_numpy(), binned["n"].to_numpy())
    return Calibrator(
        kind="isotonic",
        knots_x=tuple(float(v) for v in binned["x"].to_numpy()),
        knots_y=tuple(float(v) for v in np.maximum.accumulate(fitted)),
    )


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen calibrator and the held-out figures it was chosen on."""

    calibrator: Calibrator
    scores: dict[str, dict[str, float]]

    def describe(self) -> str:
        lines = [f"calibration: {self.calibrator.kind} chosen by cross-fitted log loss"]
        for kind, figures in self.scores.items():
            lines.append(
                f"  {kind:<9} log loss {figures['log_loss']:.5f}  ECE {figures['ece']:.5f}"
            )
        return "\n".join(lines)


def choose_calibrator(
    raw_scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    allow_sigmoid: bool,
) -> CalibrationChoice:
    """Pick sigmoid, Platt or isotonic by two-fold cross-fitted log loss on held-out rows.

    Folds are split by group (decision or customer) so that a calibrator is never scored on the
    rows it was fitted on. The chosen kind is then refitted on all rows.
    """
    raw = np.asarray(raw_scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    codes, _ = pd.factorize(np.asarray(groups))
    fold = (codes * 2654435761 % 2**32) % 2
    fitters = {"platt": fit_platt, "isotonic": fit_isotonic}
    scores: dict[str, dict[str, float]] = {}
    if allow_sigmoid:
        probability = IDENTITY.apply(raw)
        scores["sigmoid"] = {
            "log_loss": log_loss(y, probability),
            "ece": expected_calibration_error(y, probability),
        }
    for kind, fitter in fitters.items():
        probability = np.empty_like(raw)
        for held_out in (0, 1):
            fit_rows = fold != held_out
            if y[fit_rows].min() == y[fit_rows].max():
                probability[~fit_rows] = y[fit_rows].mean()
                continue
            fitted = fitter(raw[fit_rows], y[fit_rows])
            probability[~fit_rows] = fitted.apply(raw[~fit_rows])
        scores[kind] = {
            "log_loss": log_loss(y, probability),
            "ece": expected_calibration_error(y, probability),
        }
    # The simpler calibrator wins unless a richer one is clearly better on held-out rows.
    best_loss = min(figures["log_loss"] for figures in scores.values())
    best = next(
        kind for kind in scores if scores[kind]["log_loss"] <= best_loss + SIMPLER_TOLERANCE
    )
    calibrator = IDENTITY if best == "sigmoid" else fitters[best](raw, y)
    return CalibrationChoice(calibrator=calibrator, scores=scores)
