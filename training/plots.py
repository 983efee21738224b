"""Evaluation plots as matplotlib Figures (no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def feature_importance(booster: lgb.Booster, title: str, top: int = 20) -> Any:
    """Total gain per feature, the ``top`` largest."""
    gain = booster.feature_importance(importance_type="gain")
    names = np.asarray(booster.feature_name())
    order = np.argsort(gain)[::-1][:top][::-1]
    figure = _figure(7.0, 0.3 * len(order) + 1.2)
    axes = figure.subplots()
    axes.barh(names[order], gain[order], color="#4472c4")
    axes.set_xlabel("total gain")
    axes.set_title(title)
    return figure


def calibration_curve(curves: Mapping[str, Sequence[Mapping[str, float]]], title: str) -> Any:
    """Observed rate against mean predicted probability per bin, one line per scorer."""
    figure = _figure(5.5, 5.0)
    axes = figure.subplots()
    highest = 0.0
    for name, table in curves.items():
        predicted = [row["predicted"] for row in table]
        observed = [row["observed"] for row in table]
        sizes = [max(8.0, 200.0 * row["rows"] / max(r["rows"] for r in table)) for row in table]
        axes.plot(predicted, observed, marker="o", label=name)
        axes.scatter(predicted, observed, s=sizes, alpha=0.3)
        highest = max(highest, *predicted, *observed)
    limit = min(1.0, highest * 1.1 + 0.01)
    axes.plot([0, limit], [0, limit], color="grey", linestyle="--", label="perfect")
    axes.set_xlim(0, limit)
    axes.set_ylim(0, limit)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed rate")
    axes.set_title(title)
    axes.legend()
    return figure


def metrics_per_slice(
    values: Mapping[str, Mapping[str, float | None]], metric: str, title: str
) -> Any:
    """Grouped bars: ``values[slice][scorer]`` of one metric."""
    slices = list(values)
    scorers = sorted({scorer for entry in values.values() for scorer in entry})
    figure = _figure(max(7.0, 0.9 * len(slices) + 2), 4.5)
    axes = figure.subplots()
    width = 0.8 / max(1, len(scorers))
    x = np.arange(len(slices))
    for i, scorer in enumerate(scorers):
        heights = [values[s].get(scorer) or 0.0 for s in slices]
        axes.bar(x + i * width, heights, width, label=scorer)
    axes.set_xticks(x + width * (len(scorers) - 1) / 2, slices, rotation=30, ha="right")
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.legend()
    return figure


def size_tradeoff(rows: Sequence[Mapping[str, Any]], metric: str, title: str) -> Any:
    """Held-out quality against pred_contrib milliseconds, one point per candidate."""
    figure = _figure(6.0, 4.5)
    axes = figure.subplots()
    for row in rows:
        marker = "*" if row["chosen"] else "o"
        axes.scatter(
            row["pred_contrib_ms_3_rows"],
            row[metric],
            marker=marker,
            s=120 if row["chosen"] else 50,
        )
        axes.annotate(
            f"{row['objective']}/{row['budget']} ({row['trees']} trees)",
            (row["pred_contrib_ms_3_rows"], row[metric]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes.set_xlabel("pred_contrib ms for 3 rows (one thread)")
    axes.set_ylabel(metric)
    axes.set_title(title)
    return figure
