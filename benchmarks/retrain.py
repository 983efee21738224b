"""``offers retrain`` on a simulated world: wall time and peak memory per step.

The world is simulated into a scratch folder first (not timed as part of the retrain), then every
step runs against a fresh feature store and a fresh MLflow store in that folder. A second run on
the same data measures what an unchanged rerun costs (the steps are idempotent).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.runner import (
    QUICK_WORLD_CUSTOMERS,
    WORLD_CUSTOMERS,
    WORLD_MONTHS,
    WORLD_SEED,
    world_settings,
    write_result,
)

log = logging.getLogger(__name__)

FULL = {"customers": WORLD_CUSTOMERS, "months": WORLD_MONTHS, "seed": WORLD_SEED}
QUICK = {"customers": QUICK_WORLD_CUSTOMERS, "months": 15, "seed": WORLD_SEED}
TARGET_SECONDS = 600.0


def _steps(result: Any) -> dict[str, dict[str, Any]]:
    return {
        step.name: {
            "seconds": round(step.seconds, 1),
            "peak_rss_mb": round(step.peak_rss_mb),
            "rss_at_start_mb": round(step.start_rss_mb),
            "detail": step.detail,
        }
        for step in result.steps
    }


def measure(root: Path, world: dict[str, int], catalog: Path) -> dict[str, Any]:
    """Simulate ``world`` into ``root``, run the retrain twice, and return the figures."""
    from core.catalog import load_catalog
    from pipelines.retrain import run_retrain
    from pipelines.simulation.world import simulate

    settings = world_settings(root, catalog)
    started = time.perf_counter()
    simulate(
        customers=world["customers"],
        months=world["months"],
        seed=world["seed"],
        out=settings.data_dir,
        catalog=load_catalog(catalog),
        end_month=dt.date(2026, 11, 1),
    )
    simulate_seconds = time.perf_counter() - started

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    first = run_retrain(settings=settings, show_progress=False)
    rerun = run_retrain(settings=settings, show_progress=False)
    train = first.values["train"]
    oracle = first.values.get("oracle")
    ranker = train.ranker.metrics
    churn = train.churn.metrics
    return {
        "world": world,
        "simulate_seconds": round(simulate_seconds, 1),
        "load_average_at_start": round(load, 2),
        "retrain": {
            "total_seconds": round(first.seconds, 1),
            "within_target": first.seconds < TARGET_SECONDS,
            "target_seconds": TARGET_SECONDS,
            "peak_rss_mb": round(max(step.peak_rss_mb for step in first.steps)),
            "steps": _steps(first),
        },
        "rerun_same_data": {"total_seconds": round(rerun.seconds, 1), "steps": _steps(rerun)},
        "ranker": {
            key: round(value, 4)
            for key, value in ranker.items()
            if key.startswith(("val_", "pred_contrib", "trees", "seconds_", "train_rows"))
            and "_slice_" not in key
        },
        "churn": {
            key: round(value, 4)
            for key, value in churn.items()
            if key.startswith(("val_auc", "val_top_decile", "val_log_loss", "val_ece", "seconds_"))
            and "_slice_" not in key
        },
        "oracle_expected_acceptance": oracle.expected_acceptance if oracle else None,
        "model_size_tradeoff": train.ranker.fitted.tradeoff() if train.ranker.fitted else None,
    }


def run(quick: bool) -> dict[str, Any]:
    """Benchmark the retrain on the default 200,000-customer world (20,000 when ``quick``)."""
    world = QUICK if quick else FULL
    catalog = Path("catalog/offers.yaml").resolve()
    root = Path(tempfile.mkdtemp(prefix="offers-bench-retrain-"))
    try:
        figures = measure(root, world, catalog)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    name = "retrain_quick" if quick else "retrain"
    path = write_result(name, figures)
    log.info("retrain benchmark written to %s", path)
    return figures
