"""Runs benchmarks by name and writes each result to benchmarks/results/<name>.json."""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("benchmarks/results")
REPOSITORY = Path(__file__).resolve().parents[1]

# The default world every benchmark simulates.
WORLD_CUSTOMERS = 200_000
QUICK_WORLD_CUSTOMERS = 20_000
WORLD_MONTHS = 24
WORLD_SEED = 7
WORLD_END_MONTH = "2026-11"

# name -> module in benchmarks/ with `run(quick: bool) -> dict`
BENCHMARKS: dict[str, str] = {
    "simulate": "benchmarks.simulate",
    "features": "benchmarks.features",
    "retrain": "benchmarks.retrain",
    "api": "benchmarks.api",
    "quality": "benchmarks.quality",
    "experiment-report": "benchmarks.experiment_report",
    "soak": "benchmarks.soak",
    "invoice-run": "benchmarks.invoice_run",
    "invoice-run-million": "benchmarks.invoice_run_million",
    "log-writes": "benchmarks.log_writes",
}
# Benchmarks that take ``minutes`` (how long to hold the load).
TIMED = frozenset({"soak"})
# Run only when named: the timed ones, and those that take most of an hour.
ON_REQUEST = TIMED | {"invoice-run-million"}

log = logging.getLogger(__name__)


def default_benchmarks() -> list[str]:
    """What a plain ``offers bench`` runs: every benchmark but those run on purpose (the soak,
    the million invoices)."""
    return [name for name in BENCHMARKS if name not in ON_REQUEST]


def world_customers(quick: bool) -> int:
    """Customers in the benchmarks' world: the default world, or a smaller one for a quick check."""
    return QUICK_WORLD_CUSTOMERS if quick else WORLD_CUSTOMERS


def world_settings(root: Path, catalog: Path) -> Any:
    """Settings whose every store lives under ``root``: a benchmark's own scratch world."""
    from core.settings import Settings

    return Settings(
        data_dir=root / "raw",
        catalog=catalog,
        features_dir=root / "features",
        feast_dir=root / "feast",
        database_url=f"sqlite:///{root}/offers.db",
        mlflow_tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db",
        mlflow_artifact_root=root / "mlruns" / "artifacts",
    )


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


def simulate_command(customers: int, out: Path) -> list[str]:
    """`offers simulate` of the default world with ``customers``, into ``out``."""
    return [
        sys.executable,
        "-m",
        "pipelines.cli",
        "simulate",
        "--customers",
        str(customers),
        "--months",
        str(WORLD_MONTHS),
        "--seed",
        str(WORLD_SEED),
        "--end-month",
        WORLD_END_MONTH,
        "--out",
        str(out),
    ]


def run_child(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``command`` run as a child process from the repository."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if code != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed ({code}): {errors[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def split_cores() -> tuple[int | None, int | None]:
    """The first two CPUs this process may use: one for a server, one for its load generator.

    Pinned apart, the load generator's own work does not show up as server latency (unpinned on
    two cores, the measured rates fall to a third). ``(None, None)`` when there are fewer than two
    or no ``taskset``.
    """
    if not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run by ``taskset`` on ``cpu``; unchanged when ``cpu`` is None."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Feast's metrics module sets these (to a folder of its own) when it loads, unless set already.
FEAST_METRICS_VARIABLES = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR")


def keep_prometheus_in_process() -> None:
    """Load Feast's metrics module now and take back the variables it sets.

    Loaded by a benchmark's first materialize or online read, it switches prometheus_client to
    its multiprocess mode (every counter a file) for the rest of the process and for every
    process started from it: the servers and invoice runs measured would count their metrics
    otherwise than ``offers serve`` or ``offers invoice-run`` started from a shell do.
    prometheus_client chooses how it keeps values when first imported, so it is imported first.
    """
    unset = [name for name in FEAST_METRICS_VARIABLES if name not in os.environ]
    importlib.import_module("prometheus_client")  # first: in-process values
    importlib.import_module("feast.metrics")
    for name in unset:
        os.environ.pop(name, None)


def run_benchmarks(
    names: list[str], quick: bool = False, minutes: float | None = None
) -> dict[str, dict[str, Any]]:
    """Run the named benchmarks (all when empty) and return their figures; ``minutes`` is how
    long the timed ones (the soak) hold their load."""
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    if minutes is not None and not TIMED.intersection(names):
        raise KeyError(f"--minutes applies to {', '.join(sorted(TIMED))} only: name it")
    if minutes is not None and minutes <= 0:
        raise KeyError(f"--minutes must be positive, got {minutes}")
    keep_prometheus_in_process()
    results: dict[str, dict[str, Any]] = {}
    for name in names or default_benchmarks():
        module = importlib.import_module(BENCHMARKS[name])
        log.info("benchmark %s", name)
        if name in TIMED:
            results[name] = module.run(quick=quick, minutes=minutes)
        else:
            results[name] = module.run(quick=quick)
    return results
