"""An invoice run killed with ``kill -9`` and started again: the finished slices are not decided
again, no decision is logged twice, and the output is the uninterrupted run's, byte for byte.

The session's simulated world (its champions in the MLflow registry) is decided by ``offers
invoice-run`` in a child process, in slices of a few dozen invoices; the child is killed as soon
as its manifest names a finished slice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from pipelines.invoice_run import InvoiceRunError, run_invoice_run
from pipelines.invoice_run.slices import MANIFEST, SliceStore, slice_bounds, slices_folder
from serving.decision_log import DecisionLog
from serving.decision_log.database import create_log_engine
from serving.decision_log.records import ExperimentSpec, Variant
from serving.experiments import Experiments
from tests.factories.spark import require_spark
from tests.simulated_world import SimulatedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPOSITORY = Path(__file__).resolve().parents[2]
INVOICE_DATE = dt.date(2026, 11, 20)
SLICE = 40


def _settings(world: SimulatedWorld, folder: Path) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    return world.settings.model_copy(update={"database_url": f"sqlite:///{folder / 'offers.db'}"})


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY),
        "OFFERS_DATA_DIR": str(settings.data_dir),
        "OFFERS_CATALOG": str(settings.catalog),
        "OFFERS_FEATURES_DIR": str(settings.features_dir),
        "OFFERS_FEAST_DIR": str(settings.feast_dir),
        "OFFERS_DATABASE_URL": settings.database_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "OFFERS_MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
    }


def _finished(out: Path) -> int:
    try:
        manifest = json.loads((slices_folder(out) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return len(manifest["finished"])


def _logged(settings: Settings) -> tuple[int, int]:
    """Decisions in the log, and distinct invoices among them."""
    database = settings.database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as connection:
        total, invoices = connection.execute(
            "SELECT count(*), count(DISTINCT invoice_id) FROM decisions"
        ).fetchone()
    return int(total), int(invoices)


def _still_running(out: Path) -> list[int]:
    """The processes whose command line names ``out``: a run and the workers it forked (a fork
    keeps its parent's command line)."""
    running = []
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or one that ended meanwhile
            continue
        if str(out).encode() in arguments:
            running.append(int(entry.name))
    return running


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_killed_after_a_slice_resumes_and_writes_the_uninterrupted_output(
    simulated_world: SimulatedWorld, tmp_path: Path, workers: int
) -> None:
    """One worker, and two: the workers of a run killed with ``kill -9`` end with it, so that
    none goes on writing decisions beside the run started again."""
    interrupted = _settings(simulated_world, tmp_path / "interrupted")
    out = tmp_path / "interrupted" / "decisions.parquet"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "invoice-run",
            "--invoice-date",
            INVOICE_DATE.isoformat(),
            "--out",
            str(out),
            "--slice-invoices",
            str(SLICE),
            "--workers",
            str(workers),
        ],
        cwd=tmp_path,
        env=_environment(interrupted),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while _finished(out) == 0 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    deadline = time.monotonic() + 10
    while _still_running(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _still_running(out)
    for orphan in left:  # not to outlive the test
        os.kill(orphan, signal.SIGKILL)
    assert left == [], "workers of the killed run went on"
    finished_before = _finished(out)
    assert finished_before >= 1
    assert not out.exists()
    written_before, _ = _logged(interrupted)
    assert written_before >= finished_before * SLICE

    resumed = run_invoice_run(INVOICE_DATE, out, settings=interrupted, slice_invoices=SLICE)

    assert resumed.resumed_slices == finished_before
    assert resumed.slices > finished_before
    assert resumed.decided == resumed.invoices > 300
    # Every invoice's decision is in the log once: the interrupted slice's logged decisions
    # were replayed, not made again.
    assert _logged(interrupted) == (resumed.decided, resumed.decided)
    # The summary counts every slice, those of the first start too; an invoice whose decision
    # the first start logged without finishing its slice is replayed.
    assert resumed.logged is not None
    assert resumed.logged + resumed.replayed == resumed.decided
    assert not slices_folder(out).exists()

    uninterrupted = _settings(simulated_world, tmp_path / "uninterrupted")
    reference = tmp_path / "uninterrupted" / "decisions.parquet"
    whole = run_invoice_run(INVOICE_DATE, reference, settings=uninterrupted, slice_invoices=SLICE)
    assert whole.resumed_slices == 0
    assert whole.logged == whole.decided == resumed.decided
    assert out.read_bytes() == reference.read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference))


def test_a_run_of_other_inputs_does_not_reuse_the_slices(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    settings = _settings(simulated_world, tmp_path)
    out = tmp_path / "decisions.parquet"
    first = run_invoice_run(
        INVOICE_DATE, out, settings=settings, slice_invoices=500, log_decisions=False
    )
    # Slices left behind by a run of another slice size (as if it had been interrupted) are
    # another run's: discarded, not mixed into this output.
    store = SliceStore(out)
    store.resume("another run", 2, dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    store.write(0, pa.table({"invoice_id": ["X"]}))
    store.mark_finished(0, {})
    again = run_invoice_run(
        INVOICE_DATE, out, settings=settings, slice_invoices=500, log_decisions=False
    )
    assert again.resumed_slices == 0
    assert again.decided == first.decided
    assert "X" not in set(pq.read_table(out).column("invoice_id").to_pylist())


def test_slices_never_split_a_customer() -> None:
    customers = pd.Series(["A", "A", "B", "C", "C", "C", "D"])
    assert slice_bounds(customers, 2) == [(0, 2), (2, 6), (6, 7)]
    assert slice_bounds(customers, 10) == [(0, 7)]
    assert slice_bounds(pd.Series([], dtype=str), 3) == []
    with pytest.raises(ValueError, match="at least one"):
        slice_bounds(customers, 0)


def test_two_workers_write_the_one_workers_file(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    settings = _settings(simulated_world, tmp_path)
    outs = {workers: tmp_path / f"{workers}.parquet" for workers in (1, 2)}
    summaries = {
        workers: run_invoice_run(
            INVOICE_DATE,
            out,
            settings=settings,
            slice_invoices=200,
            log_decisions=False,
            workers=workers,
        )
        for workers, out in outs.items()
    }
    assert summaries[2].slices == summaries[1].slices >= 5
    assert summaries[2].decided == summaries[1].decided == summaries[1].invoices
    assert outs[2].read_bytes() == outs[1].read_bytes()


def test_a_run_of_two_workers_that_fails_midway_resumes_from_the_slices_they_wrote(
    simulated_world: SimulatedWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.invoice_run.local import LocalSlices

    settings = _settings(simulated_world, tmp_path)
    whole = tmp_path / "whole.parquet"
    run_invoice_run(INVOICE_DATE, whole, settings=settings, slice_invoices=200, log_decisions=False)
    out = tmp_path / "decisions.parquet"
    original = LocalSlices.decide
    decided = {"slices": 0}

    def fails_on_a_workers_second_slice(self: LocalSlices, invoices: pd.DataFrame, as_of: object):
        # Each forked worker counts its own slices: its second one fails.
        decided["slices"] += 1
        if decided["slices"] == 2 and os.getpid() != parent:
            raise RuntimeError("a worker lost its slice")
        return original(self, invoices, as_of)  # type: ignore[arg-type]

    parent = os.getpid()
    monkeypatch.setattr(LocalSlices, "decide", fails_on_a_workers_second_slice)
    with pytest.raises(RuntimeError, match="lost its slice"):
        run_invoice_run(
            INVOICE_DATE, out, settings=settings, slice_invoices=200, log_decisions=False, workers=2
        )
    finished = _finished(out)
    assert finished >= 1  # the slices before the lost one, each written by its worker
    # A slice bears its name only once the run has named it finished: what a worker wrote
    # beyond that has a name of the worker's own.
    named = sorted(slices_folder(out).glob("slice-*.parquet"))
    assert len(named) == finished
    monkeypatch.setattr(LocalSlices, "decide", original)

    again = run_invoice_run(
        INVOICE_DATE, out, settings=settings, slice_invoices=200, log_decisions=False, workers=2
    )

    assert again.resumed_slices == finished
    assert out.read_bytes() == whole.read_bytes()
    assert not slices_folder(out).exists()


def _log_rows(settings: Settings) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The log's decisions (everything but when each was written) and shown offers, in order."""
    engine = create_log_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            decisions = connection.exec_driver_sql(
                "SELECT decision_id, invoice_id, customer_id, invoice_date, policy, model_version,"
                " experiment_key, experiment_variant, degraded, response, consent, log,"
                " model_inputs FROM decisions"
            ).all()
            offers = connection.exec_driver_sql(
                "SELECT decision_id, offer_id, rank, propensity, score, acceptance"
                " FROM decision_offers"
            ).all()
    finally:
        engine.dispose()

    # Dates as SQLite keeps them, the JSON columns (SQLite's text, PostgreSQL's values) as
    # values, and Python's order, so that the two databases compare.
    def plain(row: Any) -> tuple[object, ...]:
        values = [value.isoformat() if isinstance(value, dt.date) else value for value in row]
        for column in range(10, len(values)):
            if isinstance(values[column], str):
                values[column] = json.loads(values[column])
            values[column] = json.dumps(values[column], sort_keys=True)
        return tuple(values)

    return sorted(map(plain, decisions)), sorted(map(plain, offers))


def _with_experiment(settings: Settings) -> None:
    log = DecisionLog(settings.database_url)
    try:
        Experiments(log).create(
            ExperimentSpec(
                key="ranker-vs-rules",
                description="",
                variants=(
                    Variant("treatment", 0.5, "model"),
                    Variant("rules", 0.3, "rules"),
                    Variant("control", 0.2, "holdout"),
                ),
                start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                end=dt.datetime(2026, 12, 31, tzinfo=dt.UTC),
            )
        )
    finally:
        log.close()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_logged_run_of_two_workers_logs_and_writes_what_one_worker_does(
    simulated_world: SimulatedWorld, tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """Each worker writes its slices' decisions to the log over connections of its own (on
    PostgreSQL a connection carried over the fork would mix two processes' messages)."""
    runs = {workers: _settings(simulated_world, tmp_path / str(workers)) for workers in (1, 2)}
    if database == "postgres":
        schema = request.getfixturevalue("pg_schema")
        url = f"{request.getfixturevalue('postgres_url')}?options=-csearch_path%3D{schema}"
        runs[2] = runs[2].model_copy(update={"database_url": url})
    outs = {workers: tmp_path / str(workers) / "decisions.parquet" for workers in (1, 2)}
    summaries = {}
    for workers, settings in runs.items():
        _with_experiment(settings)
        summaries[workers] = run_invoice_run(
            INVOICE_DATE, outs[workers], settings=settings, slice_invoices=200, workers=workers
        )
    one, two = summaries[1], summaries[2]
    assert two.slices == one.slices >= 5
    assert two.logged == one.logged == one.decided == one.invoices
    assert two.experiment == one.experiment == "ranker-vs-rules"
    assert outs[2].read_bytes() == outs[1].read_bytes()
    decisions, offers = _log_rows(runs[2])
    assert (decisions, offers) == _log_rows(runs[1])
    assert len(decisions) == one.invoices and offers
    assert {row[7] for row in decisions} >= {"treatment", "rules", "control"}

    again = run_invoice_run(
        INVOICE_DATE, tmp_path / "again.parquet", settings=runs[2], slice_invoices=200, workers=2
    )
    assert (again.logged, again.replayed) == (0, one.invoices)
    assert _log_rows(runs[2]) == (decisions, offers)
    assert (tmp_path / "again.parquet").read_bytes() == outs[1].read_bytes()


@pytest.mark.spark
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_logged_spark_run_logs_and_writes_what_the_local_engine_does(
    simulated_world: SimulatedWorld, tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """Each Spark partition decides as a slice of the local logged run, writing to the log over
    connections of its own: the same rows, the same decisions and offers in the log, the
    experiment's variants included; a second Spark run replays every invoice."""
    require_spark()
    local = _settings(simulated_world, tmp_path / "local")
    spark = _settings(simulated_world, tmp_path / "spark").model_copy(
        update={"spark_master": "local[2]"}
    )
    if database == "postgres":
        schema = request.getfixturevalue("pg_schema")
        url = f"{request.getfixturevalue('postgres_url')}?options=-csearch_path%3D{schema}"
        spark = spark.model_copy(update={"database_url": url})
    outs = {"local": tmp_path / "local" / "decisions.parquet", "spark": tmp_path / "spark.parquet"}
    for settings in (local, spark):
        _with_experiment(settings)
    one = run_invoice_run(INVOICE_DATE, outs["local"], settings=local)
    run = run_invoice_run(INVOICE_DATE, outs["spark"], "spark", settings=spark)
    assert run.logged == one.logged == one.decided == one.invoices
    assert (run.replayed, run.conflicts) == (0, 0)
    assert run.experiment == one.experiment == "ranker-vs-rules"
    expected = pd.read_parquet(outs["local"])
    pd.testing.assert_frame_equal(pd.read_parquet(outs["spark"]), expected)
    decisions, offers = _log_rows(spark)
    assert (decisions, offers) == _log_rows(local)
    assert {row[7] for row in decisions} >= {"treatment", "rules", "control"}

    again = run_invoice_run(INVOICE_DATE, tmp_path / "again.parquet", "spark", settings=spark)
    assert (again.logged, again.replayed) == (0, one.invoices)
    assert _log_rows(spark) == (decisions, offers)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again.parquet"), expected)


def test_more_than_one_worker_needs_the_local_engine(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    out = tmp_path / "decisions.parquet"
    with pytest.raises(InvoiceRunError, match="only with the local engine"):
        run_invoice_run(
            INVOICE_DATE,
            out,
            "spark",
            settings=_settings(simulated_world, tmp_path),
            log_decisions=False,
            workers=2,
        )
    assert not out.exists() and not slices_folder(out).exists()


def test_a_logged_run_counts_each_decision_once_with_prometheus_in_multiprocess_mode(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    """Feast switches prometheus_client to its multiprocess mode for a process and its children
    when its metrics module loads (PROMETHEUS_MULTIPROCESS_DIR); counters of one name then share
    their value within a process, and the slices' counts once added up to far more decisions
    than the run wrote. The run counts its decisions itself and keeps no Prometheus counters."""
    settings = _settings(simulated_world, tmp_path)
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    environment = {
        **_environment(settings),
        "PROMETHEUS_MULTIPROCESS_DIR": str(metrics),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    command = [sys.executable, "-m", "pipelines.cli", "invoice-run", "--invoice-date"]
    command += [INVOICE_DATE.isoformat(), "--out", str(tmp_path / "decisions.parquet")]
    command += ["--slice-invoices", str(SLICE), "--workers", "2"]
    finished = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    assert not any(metrics.iterdir()), "no Prometheus counter was kept"
    written, invoices = _logged(settings)
    assert written == invoices > 300
    printed = " ".join(finished.stderr.split())
    assert f"decision log: {written:,} decisions written, 0 replayed" in printed
