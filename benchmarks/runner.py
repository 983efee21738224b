"""Runs benchmarks by name and writes each result to benchmarks/results/<name>.json."""

from __future__ import annotations

import importlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("benchmarks/results")

# name -> module in benchmarks/ with `run(quick: bool) -> dict`
BENCHMARKS: dict[str, str] = {
    "simulate": "benchmarks.simulate",
    "features": "benchmarks.features",
    "retrain": "benchmarks.retrain",
    "api": "benchmarks.api",
}

log = logging.getLogger(__name__)


def write_result(name: str, figures: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write one benchmark's figures with when and where they were measured."""
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": _cpu_count()},
        **figures,
    }
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_benchmarks(names: list[str], quick: bool = False) -> dict[str, dict[str, Any]]:
    """Run the named benchmarks (all when empty) and return their figures."""
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    results: dict[str, dict[str, Any]] = {}
    for name in names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        log.info("benchmark %s", name)
        results[name] = module.run(quick=quick)
    return results
