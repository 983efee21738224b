"""Benchmark: build the feature tables, materialize them, and read one customer's features.

On the default world (200,000 customers × 24 months; 20,000 with --quick):

- build: ``offers features build`` as a child process (contract check, reading, building and
  writing every feature table), wall time and peak memory;
- materialize into SQLite and into Redis with the bulk writer ``offers features materialize``
  uses, per feature view; Feast's own ``materialize`` is timed on a sample of customers into the
  same stores and scaled up, to show why the bulk writer is the default;
- online read of every customer feature ``offer_ranker_v1`` needs (usage, contract, billing,
  profile: 76 features) for one random customer, p50 and p99 over 2,000 reads, through Feast's
  ``get_online_features(...).to_dict()`` and through ``features.online.OnlineFeatures``.

Targets: p99 under 1 ms for the read, materialize under 60 s. The machine's load average is
recorded with the figures, since other work on the same cores moves tail latencies.

``OFFERS_BENCH_WORLD`` may name an existing world of the right size (it is simulated otherwise);
``OFFERS_BENCH_REDIS_URL`` the Redis to use (default database 15 of the local one; only this
run's keys are written and deleted).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks.runner import (
    WORLD_MONTHS,
    WORLD_SEED,
    run_child,
    simulate_command,
    world_customers,
    write_result,
)
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.settings import Settings
from features.views import FEATURE_VIEWS

log = logging.getLogger(__name__)

FEAST_SAMPLE_CUSTOMERS = 20_000
QUICK_FEAST_SAMPLE_CUSTOMERS = 5_000
READS = 2_000
WARM_UP_READS = 200
TARGET_P99_MS = 1.0
TARGET_MATERIALIZE_SECONDS = 60.0
RANKER_CUSTOMER_VIEWS = (
    "customer_usage",
    "customer_contract",
    "customer_billing",
    "customer_profile",
)


def _world(customers: int, work: Path) -> Path:
    given = os.environ.get("OFFERS_BENCH_WORLD")
    if given:
        return Path(given)
    out = work / "raw"
    run_child(simulate_command(customers, out))
    return out


def _newest_time(features_dir: Path) -> dt.datetime:
    newest = max(
        pc.max(
            ds.dataset(features_dir / f"{view}.parquet").to_table(columns=[EVENT_TIMESTAMP])[0]
        ).as_py()
        for view in FEATURE_VIEWS
    )
    return newest.astimezone(dt.UTC) + dt.timedelta(seconds=1)


def _redis_url() -> str | None:
    url = os.environ.get("OFFERS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1.0):
            return url
    except OSError:
        return None


def _drop_redis_project(url: str, project: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=b"*" + project.encode(), count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def _sample_tables(features_dir: Path, out: Path, customers: int) -> None:
    """The feature tables of the first ``customers`` customers (by id)."""
    out.mkdir(parents=True, exist_ok=True)
    ids = (
        pq.read_table(features_dir / "customer_consent.parquet", columns=[CUSTOMER_KEY])
        .column(0)
        .unique()
        .sort()[:customers]
    )
    for view in FEATURE_VIEWS:
        dataset = ds.dataset(features_dir / f"{view}.parquet")
        if view == "offer_attributes":
            table = dataset.to_table()
        else:
            table = dataset.to_table(filter=ds.field(CUSTOMER_KEY).isin(ids))
        pq.write_table(table, out / f"{view}.parquet")


def _settings(work: Path, name: str, raw: Path, features_dir: Path, online: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=raw,
        features_dir=features_dir,
        feast_dir=work / f"feast-{name}",
        online_store=online,
    )


def _materialize(settings: Settings, project: str, end: dt.datetime, engine: str) -> dict[str, Any]:
    from features.store import apply_repository, materialize

    apply_repository(settings, project=project)
    started = time.perf_counter()
    report = materialize(
        end,
        settings,
        project=project,
        engine=engine,  # type: ignore[arg-type]
        show_progress=False,
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "entities": max(load.entities for load in report.views),
        "features": sum(load.features for load in report.views),
        "views": {
            load.view: {"seconds": round(load.seconds, 2), "entities": load.entities}
            for load in report.views
        },
    }


def _latencies(read: Callable[[str], Any], ids: list[str]) -> dict[str, float]:
    chooser = random.Random(WORLD_SEED)
    for _ in range(WARM_UP_READS):
        read(chooser.choice(ids))
    timings = np.empty(READS)
    for position in range(READS):
        customer = chooser.choice(ids)
        started = time.perf_counter()
        read(customer)
        timings[position] = time.perf_counter() - started
    p50, p90, p99 = np.percentile(timings * 1000.0, [50, 90, 99])
    return {
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p99_ms": round(float(p99), 3),
        "reads": READS,
    }


def _online_reads(settings: Settings, project: str, ids: list[str]) -> dict[str, Any]:
    from features.online import OnlineFeatures
    from features.store import open_store

    store = open_store(settings, project=project)
    direct = OnlineFeatures(store)
    refs = [f"{view}:{name}" for view in RANKER_CUSTOMER_VIEWS for name in FEATURE_VIEWS[view]]

    def through_feast(customer: str) -> Any:
        return store.get_online_features(
            features=refs, entity_rows=[{CUSTOMER_KEY: customer}]
        ).to_dict()

    def through_reader(customer: str) -> Any:
        return direct.get_online_features(
            features=refs, entity_rows=[{CUSTOMER_KEY: customer}]
        ).to_dict()

    same = all(through_feast(customer) == through_reader(customer) for customer in ids[:200])
    return {
        "features": len(refs),
        "feast_get_online_features": _latencies(through_feast, ids),
        "online_features_reader": _latencies(through_reader, ids),
        "reader_matches_feast": same,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Build, materialize and read; write the figures to benchmarks/results/features.json."""
    customers = world_customers(quick)
    sample = QUICK_FEAST_SAMPLE_CUSTOMERS if quick else FEAST_SAMPLE_CUSTOMERS
    work = Path(tempfile.mkdtemp(prefix="features-bench-", dir=os.environ.get("OFFERS_BENCH_DIR")))
    run_id = uuid.uuid4().hex[:8]
    redis_url = _redis_url()
    projects: list[str] = []
    figures: dict[str, Any] = {
        "world": {"customers": customers, "months": WORLD_MONTHS, "seed": WORLD_SEED},
        "load_average_before": [round(value, 2) for value in os.getloadavg()],
        "targets": {
            "online_read_p99_ms": TARGET_P99_MS,
            "materialize_seconds": TARGET_MATERIALIZE_SECONDS,
        },
    }
    try:
        raw = _world(customers, work)
        features_dir = work / "features"
        build_seconds, build_mib = run_child(
            [sys.executable, "-m", "pipelines.cli", "features", "build", "--data", str(raw)],
            {"OFFERS_FEATURES_DIR": str(features_dir), "OFFERS_DATA_DIR": str(raw)},
        )
        rows = {
            view: pq.ParquetFile(features_dir / f"{view}.parquet").metadata.num_rows
            for view in FEATURE_VIEWS
        }
        figures["build"] = {
            "seconds": round(build_seconds, 1),
            "peak_rss_mib": round(build_mib),
            "rows": rows,
        }
        end = _newest_time(features_dir)
        ids = (
            pq.read_table(features_dir / "customer_consent.parquet", columns=[CUSTOMER_KEY])
            .column(0)
            .unique()
            .to_pylist()
        )

        stores = {"sqlite": "sqlite"}
        if redis_url:
            stores["redis"] = redis_url
        else:
            figures["redis"] = "skipped: Redis is not reachable"
        materialized: dict[str, Any] = {}
        reads: dict[str, Any] = {}
        feast_sample: dict[str, Any] = {}
        sample_dir = work / "sample-features"
        _sample_tables(features_dir, sample_dir, sample)
        for name, online in stores.items():
            project = f"bench_features_{run_id}_{name}"
            projects.append(project)
            settings = _settings(work, name, raw, features_dir, online)
            materialized[name] = _materialize(settings, project, end, "bulk")
            reads[name] = _online_reads(settings, project, ids)
            for engine in ("feast", "bulk"):
                sample_project = f"bench_features_{run_id}_{name}_{engine}_sample"
                projects.append(sample_project)
                sample_settings = _settings(
                    work, f"{name}-{engine}-sample", raw, sample_dir, online
                )
                result = _materialize(sample_settings, sample_project, end, engine)
                feast_sample.setdefault(name, {})[engine] = {
                    "customers": sample,
                    "seconds": result["seconds"],
                    f"scaled_to_{customers}_customers_seconds": round(
                        result["seconds"] * customers / sample, 1
                    ),
                }
            if name == "redis":
                _drop_redis_project(online, project)
        figures["materialize"] = {
            **materialized,
            "same_sample_feast_materialize_vs_bulk": feast_sample,
            "choice": (
                "offers features materialize writes the newest row per entity with the bulk "
                "writer (features/materialize.py): the same keys and serialised values Feast "
                "writes, converted a column at a time and sent in one statement per entity "
                "(SQLite) or one HSET per entity (Redis); Feast's materialize converts and writes "
                "value by value. engine='feast' keeps Feast's path available."
            ),
        }
        figures["online_read"] = {
            **reads,
            "note": (
                "features.online.OnlineFeatures reads the same store layout in one statement "
                "(SQLite) or one HMGET (Redis) and answers what get_online_features().to_dict() "
                "answers; serving can wrap its FeatureStore in it."
            ),
        }
        figures["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
        figures["met"] = {
            name: {
                "materialize_under_60_s": materialized[name]["seconds"]
                < TARGET_MATERIALIZE_SECONDS,
                "read_p99_under_1_ms_feast": reads[name]["feast_get_online_features"]["p99_ms"]
                < TARGET_P99_MS,
                "read_p99_under_1_ms_reader": reads[name]["online_features_reader"]["p99_ms"]
                < TARGET_P99_MS,
            }
            for name in stores
        }
    finally:
        if redis_url:
            for project in projects:
                _drop_redis_project(redis_url, project)
        shutil.rmtree(work, ignore_errors=True)
    path = write_result("features", figures)
    log.info("features benchmark written to %s", path)
    return figures


if __name__ == "__main__":  # pragma: no cover - `python -m benchmarks.features [--quick]`
    logging.basicConfig(level=logging.INFO)
    run(quick="--quick" in sys.argv)
