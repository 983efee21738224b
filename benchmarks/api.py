"""The invoice offer API under load, against the straightforward way of making the same decisions.

1. Prepares a world once (simulate → retrain) in ``benchmarks/.work/api-<customers>/``.
2. For each online store (SQLite, its file read once into the page cache first; then Redis):
   starts ``offers serve`` in its own process pinned to one CPU (``taskset``) and drives it from
   a second process pinned to the other, with an open-loop load generator at fixed rates; every
   request is a new invoice of a customer billed in the world's newest billing month, with that
   invoice's date, the customers drawn through the whole population, so every answer is a fresh
   decision with explanations, usage summary and a durable log write. Reports client and server
   (``Server-Timing``) p50/p99/p99.9 and the saturation rate; then the same server with
   ``POST /v1/offers/batch`` calls of ``BATCH_SIZE`` fresh invoices each, side by side.
3. In one process, the same decisions made two ways: the engine as served (the consent read, then
   account and profile in one read, numpy model inputs, ``pred_contrib`` for the shown offers
   only) and the straightforward path (Feast SDK with the feature service and ``to_df``, MLflow
   pyfunc predict, ``pred_contrib`` on every candidate).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner import pinned, split_cores, world_customers, write_result
from core.columns import CUSTOMER_KEY

WORK_ROOT = Path("benchmarks/.work")
API_KEY = "bench-renderer-key-0123456789"
REDIS_URL = os.environ.get("OFFERS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
LOOP_RATES = (100, 300, 600, 800, 1000, 1200, 1500)
# POST /v1/offers/batch: calls a second, each with BATCH_SIZE fresh invoices.
BATCH_SIZE = 100
BATCH_RATES = (5, 10, 15, 20, 30, 40, 50)
BATCH_TARGET_DECISIONS = 2000
SERVER_P99_TARGET_MS = 2.0
TARGET_RATE = 300
SINGLE_RATE_TARGET = 1000
# The server on one CPU, the load generator on the other (None: not pinned, fewer than two CPUs).
SERVER_CPU, LOAD_CPU = split_cores()
TARGET_REPEATS = 3
WARM_UP_SECONDS = 5.0


def _env(work: Path, online_store: str = "sqlite", feast_dir: str = "feast") -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OFFERS_DATA_DIR": str(work / "raw"),
            "OFFERS_FEATURES_DIR": str(work / "features"),
            "OFFERS_FEAST_DIR": str(work / feast_dir),
            "OFFERS_ONLINE_STORE": online_store,
            "OFFERS_DATABASE_URL": f"sqlite:///{work}/offers-{feast_dir}.db",
            "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
            "OFFERS_MLFLOW_ARTIFACT_ROOT": str(work / "artifacts"),
            "OFFERS_API_KEYS": f"{API_KEY}:renderer",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _offers(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, check=True)


def prepare_world(customers: int, months: int = 24) -> Path:
    """Simulate and retrain once; later runs reuse the prepared folder."""
    work = (WORK_ROOT / f"api-{customers}").resolve()
    done = work / "prepared"
    if done.exists():
        return work
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work)
    _offers(["simulate", "--customers", str(customers), "--months", str(months)], env)
    _offers(["retrain"], env)
    done.write_text("ok\n", encoding="utf-8")
    return work


def prepare_redis(work: Path) -> dict[str, str]:
    """The same features, applied and materialized into Redis under their own registry."""
    env = _env(work, REDIS_URL, "feast-redis")
    _offers(["features", "apply"], env)
    _offers(["features", "materialize"], env)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"offers serve on port {port} was not ready within {timeout_s:.0f} s")


DRIFT_GAUGES_COMPUTED = "offers_drift_computed_at_seconds "


def _wait_drift_gauges(port: int, pid: int, timeout_s: float = 120.0) -> dict[str, float | None]:
    """Wait until the server's first drift gauges are computed; seconds and server CPU taken.

    A worker computes them in a thread of its own as it starts, over the log's whole monitoring
    window. Load that started at readiness would share the core with that computation and
    measure it as request latency once, at the start of a run; it is measured here instead, and
    again every ``OFFERS_MONITOR_REFRESH_SECONDS`` (300 s) in service.
    """
    started, used = time.monotonic(), _cpu_seconds(pid)
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if any(
                    line.startswith(DRIFT_GAUGES_COMPUTED.encode())
                    for line in answer.read().splitlines()
                ):
                    return {
                        "seconds_after_ready": round(time.monotonic() - started, 2),
                        "server_cpu_s": round(_cpu_seconds(pid) - used, 2),
                    }
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    # Failed or still computing: the load starts anyway, and the result says so.
    print(
        f"offers serve on port {port}: no drift gauges within {timeout_s:.0f} s of readiness",
        file=sys.stderr,
    )
    return {"seconds_after_ready": None, "server_cpu_s": round(_cpu_seconds(pid) - used, 2)}


def billed_customers(work: Path, limit: int = 5000) -> list[str]:
    """A sample of the customers billed in the newest billing month."""
    return [customer for customer, _ in newest_month_invoices(work)[:limit]]


def newest_month_invoices(work: Path) -> list[tuple[str, str]]:
    """Every customer billed in the world's newest billing month, with that invoice's date
    (ISO), in a random order: what renderers print in a month, customers drawn from the whole
    population rather than a few thousand of them again and again."""
    import pandas as pd

    invoices = pd.read_parquet(
        work / "raw" / "invoices.parquet", columns=[CUSTOMER_KEY, "invoice_date"]
    )
    dates = pd.to_datetime(invoices["invoice_date"])
    newest = dates.max()
    in_month = invoices[(dates.dt.year == newest.year) & (dates.dt.month == newest.month)]
    latest = in_month.assign(invoice_date=dates[in_month.index].dt.strftime("%Y-%m-%d"))
    latest = latest.sort_values("invoice_date").drop_duplicates(CUSTOMER_KEY, keep="last")
    latest = latest.sample(frac=1.0, random_state=7)
    return list(zip(latest[CUSTOMER_KEY], latest["invoice_date"], strict=True))


def _load_worker(
    port: int,
    invoices: list[tuple[str, str]],
    rate: float,
    duration_s: float,
    tag: str,
    out: Any,
    batch_size: int = 0,
    start: int = 0,
) -> None:
    """Requests at ``rate`` a second: single ``POST /v1/offers`` calls, or with ``batch_size``
    calls of ``POST /v1/offers/batch`` carrying that many fresh invoices each; the customers
    from ``start`` on in ``invoices``."""
    from benchmarks.loadgen import run_open_loop

    if LOAD_CPU is not None:
        os.sched_setaffinity(0, {LOAD_CPU})

    def invoice(index: int) -> dict[str, object]:
        customer, invoice_date = invoices[(start + index) % len(invoices)]
        return {
            "invoice_id": f"BENCH-{tag}-{index}",
            CUSTOMER_KEY: customer,
            "invoice_date": invoice_date,
            "locale": "sv",
            "max_offers": 3,
        }

    def batch(index: int) -> dict[str, object]:
        first = index * batch_size
        return {"invoices": [invoice(first + item) for item in range(batch_size)]}

    result = run_open_loop(
        "127.0.0.1",
        port,
        "/v1/offers/batch" if batch_size else "/v1/offers",
        batch if batch_size else invoice,
        {"Authorization": f"Bearer {API_KEY}"},
        rate_per_s=rate,
        duration_s=duration_s,
    )
    summary = result.summary()
    per_request = max(batch_size, 1)
    summary["invoices_per_request"] = per_request
    summary["decisions_per_s"] = round(float(summary["achieved_rate_per_s"]) * per_request, 1)
    out.put(summary)


def _run_rate(
    port: int,
    invoices: list[tuple[str, str]],
    rate: float,
    duration_s: float,
    tag: str,
    batch_size: int = 0,
    start: int = 0,
):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(
        target=_load_worker,
        args=(port, invoices, rate, duration_s, tag, queue, batch_size, start),
    )
    worker.start()
    summary: dict[str, Any] = queue.get(timeout=duration_s + 120)
    worker.join(timeout=30)
    return summary


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _major_faults(pid: int) -> int:
    """Page faults of a process so far that had to wait for the disk (``majflt`` in ``/proc``):
    the SQLite online store is read through a memory map, so a customer's pages that are not in
    the page cache show here."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[9])


def _kept_up(step: dict[str, Any]) -> bool:
    # A batch of a hundred invoices is one answer of a hundred decisions: its latency bound is
    # the run's, not a single invoice's.
    latency_bound_ms = 250 if step.get("invoices_per_request", 1) == 1 else 2000
    return (
        step["achieved_rate_per_s"] >= 0.95 * step["target_rate_per_s"]
        and step["errors"] == 0
        and step["client_p99_ms"] <= latency_bound_ms
    )


def drive(
    port: int,
    invoices: list[tuple[str, str]],
    rates: tuple[int, ...],
    duration_s: float,
    tag: str,
    batch_size: int = 0,
    start: int = 0,
    server_pid: int | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """Each rate from a separate process; stops after the first rate the server cannot keep.
    Answers the steps, the saturation rate and where in ``invoices`` the next requests start.

    A few seconds at a low rate first, not recorded, so that the first step does not pay for
    cold caches. The target rate runs ``TARGET_REPEATS`` times: this machine is shared and one
    run's p99 moves by a millisecond from one run to the next. Each step draws the customers
    after the previous step's, so a customer comes back only once the whole population has.
    With ``server_pid``, each step also says what CPU time the server used per decision answered
    (its process's user and system time over the step, the load generator's start included, when
    the server waits) and how many of its page faults a decision waited on the disk for.
    """
    warm_up_rate = 2 if batch_size else 50
    drawn = start

    def step(rate: float, seconds: float, name: str) -> dict[str, Any]:
        nonlocal drawn
        used = _cpu_seconds(server_pid) if server_pid is not None else 0.0
        faults = _major_faults(server_pid) if server_pid is not None else 0
        summary = _run_rate(port, invoices, rate, seconds, name, batch_size, drawn)
        drawn += int(summary["sent"]) * max(batch_size, 1)
        if server_pid is not None:
            answered = int(summary["ok"]) * max(batch_size, 1)
            used = _cpu_seconds(server_pid) - used
            summary["server_cpu_ms_per_decision"] = round(1000 * used / max(answered, 1), 3)
            faults = _major_faults(server_pid) - faults
            summary["server_disk_faults_per_decision"] = round(faults / max(answered, 1), 2)
        return summary

    step(warm_up_rate, WARM_UP_SECONDS, f"{tag}-warm-up")
    steps: list[dict[str, Any]] = []
    for rate in rates:
        repeats = TARGET_REPEATS if rate == TARGET_RATE and not batch_size else 1
        runs = [step(rate, duration_s, f"{tag}-{rate}-{repeat}") for repeat in range(repeats)]
        steps.extend(runs)
        if not all(_kept_up(run) for run in runs):
            break
    rates_kept = {s["target_rate_per_s"] for s in steps if _kept_up(s)}
    rates_missed = {s["target_rate_per_s"] for s in steps if not _kept_up(s)}
    saturation = max(rates_kept - rates_missed, default=0)
    return steps, saturation * max(batch_size, 1), drawn


def warm_page_cache(path: Path, chunk_bytes: int = 16 << 20) -> float:
    """Read a file once so its pages are cached; seconds taken.

    The SQLite online store of the default world is 3.2 GB. After other work evicted it, the first
    minute of requests reads from disk and measures the disk, not the service.
    """
    started = time.perf_counter()
    if path.exists():
        with path.open("rb") as handle:
            while handle.read(chunk_bytes):
                pass
    return round(time.perf_counter() - started, 1)


def log_diagnosis(
    env: dict[str, str], invoices: list[tuple[str, str]], start: int, kind: str
) -> dict[str, Any]:
    """For diagnosis: the SQLite server's target-rate steps again with another decision log, to
    tell what the durable log's commits cost at the tail from what the decision costs.

    ``kind`` ``"normal"``: the same log with ``?synchronous=NORMAL`` (a setting operators may
    choose: no fsync per commit, the log survives a crash of the service but not of the
    machine). ``"memory"``: a copy of the log on a memory filesystem (``/dev/shm``), which loses
    it with the machine: not a setting, what the disk costs at all. Answers the figures and where
    in ``invoices`` the next requests start."""
    durable = Path(env["OFFERS_DATABASE_URL"].removeprefix("sqlite:///"))
    memory = Path("/dev/shm")
    copy_path = memory / f"offers-bench-{os.getpid()}.db"
    if kind == "normal":
        url, described = f"sqlite:///{durable}?synchronous=NORMAL", "SQLite, synchronous=NORMAL"
    elif kind == "memory":
        if not memory.is_dir():
            return {"skipped": "no /dev/shm on this machine", "next_invoice": start}
        url, described = f"sqlite:///{copy_path}", "SQLite on /dev/shm: not durable"
    else:
        raise ValueError(f"no log diagnosis {kind!r}")
    try:
        if kind == "memory" and durable.exists():
            # A copy of the durable log, so both servers read and write a log of the same size.
            with sqlite3.connect(durable) as source, sqlite3.connect(copy_path) as copy:
                source.backup(copy)
        steps, _, drawn = _serve(
            {**env, "OFFERS_DATABASE_URL": url}, invoices, (TARGET_RATE,), 15.0, kind, start
        )
    finally:
        for leftover in memory.glob(f"{copy_path.name}*"):
            leftover.unlink()
    at_target = [s["server_p99_ms"] for s in steps]
    return {
        "decision_log": described,
        "steps": steps,
        f"server_p99_ms_at_{TARGET_RATE}_per_s": float(np.median(at_target)),
        f"server_p99_ms_at_{TARGET_RATE}_per_s_runs": at_target,
        "next_invoice": drawn,
    }


@contextmanager
def _pinned_server(env: dict[str, str]) -> Iterator[tuple[int, int, dict[str, float | None]]]:
    """``offers serve`` pinned to the server's CPU, ready and with its first drift gauges
    computed (unless they are off); yields its port, process id (taskset runs the server in its
    own process) and what those first gauges took; stops it after."""
    port = _free_port()
    server = subprocess.Popen(
        pinned([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)], SERVER_CPU),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port)
        gauges_off = float(env.get("OFFERS_MONITOR_REFRESH_SECONDS", "300")) <= 0
        first_gauges = {} if gauges_off else _wait_drift_gauges(port, server.pid)
        yield port, server.pid, first_gauges
    finally:
        server.terminate()
        server.wait(timeout=30)


def _serve(
    env: dict[str, str],
    invoices: list[tuple[str, str]],
    rates: tuple[int, ...],
    duration_s: float,
    tag: str,
    start: int,
) -> tuple[list[dict[str, Any]], int, int]:
    """One pinned server driven at ``rates`` of single requests (see :func:`drive`)."""
    with _pinned_server(env) as (port, pid, _):
        tag = f"{tag}-{time.time_ns()}"
        return drive(port, invoices, rates, duration_s, tag, start=start, server_pid=pid)


def serve_and_drive(
    env: dict[str, str], invoices: list[tuple[str, str]], quick: bool, tag: str, start: int = 0
):
    # Invoice ids unique to this run: an id already in the decision log would be a replay, not a
    # decision, and replays are far cheaper.
    tag = f"{tag}-{time.time_ns()}"
    with _pinned_server(env) as (port, pid, first_gauges):
        rates = LOOP_RATES[:4] if quick else LOOP_RATES
        duration_s = 5.0 if quick else 15.0
        steps, saturation, drawn = drive(
            port, invoices, rates, duration_s, tag, start=start, server_pid=pid
        )
        batch_rates = BATCH_RATES[:3] if quick else BATCH_RATES
        batch_steps, batch_saturation, drawn = drive(
            port,
            invoices,
            batch_rates,
            duration_s,
            f"{tag}-batch",
            BATCH_SIZE,
            start=drawn,
            server_pid=pid,
        )
    at_target = [s["server_p99_ms"] for s in steps if s["target_rate_per_s"] == TARGET_RATE]
    return {
        "steps": steps,
        "next_invoice": drawn,
        "saturation_rate_per_s": saturation,
        "saturation_target_per_s": SINGLE_RATE_TARGET,
        f"server_p99_ms_at_{TARGET_RATE}_per_s": float(np.median(at_target)) if at_target else None,
        f"server_p99_ms_at_{TARGET_RATE}_per_s_runs": at_target,
        "server_p99_target_ms": SERVER_P99_TARGET_MS,
        "server_cpu": SERVER_CPU,
        "load_generator_cpu": LOAD_CPU,
        # The first computation of the drift gauges, before the load started.
        "first_drift_gauges": first_gauges,
        "batch": {
            "invoices_per_call": BATCH_SIZE,
            "steps": batch_steps,
            "saturation_decisions_per_s": batch_saturation,
            "saturation_target_decisions_per_s": BATCH_TARGET_DECISIONS,
        },
    }


def in_process_comparison(
    env: dict[str, str], invoices: list[tuple[str, str]], decisions: int
) -> dict:
    """Decisions per second, one thread: the served engine against the straightforward path."""
    import datetime as dt

    import mlflow.pyfunc
    import pandas as pd

    from core.catalog import load_catalog
    from core.plan_fit import OFFER_KIND_CODES
    from core.settings import Settings
    from serving.decision.engine import DecisionCall, decide, decide_many
    from serving.decision.inputs import DecisionRequest
    from serving.feature_reader import open_feast_source
    from serving.scoring_model import LightGBMScorer
    from training.model_inputs import RANKER_FEATURES, add_derived_columns
    from training.registry import load_champion

    previous = dict(os.environ)
    os.environ.update(env)
    try:
        settings = Settings()
        catalog = load_catalog(settings.catalog)
        source = open_feast_source(settings)
        scorer = LightGBMScorer(
            load_champion("offer-ranker", settings), load_champion("churn-risk", settings)
        )
        # The HTTP load's invoices, each on its own date.
        sample = [
            (customer, dt.date.fromisoformat(invoice_date))
            for customer, invoice_date in invoices[:decisions]
        ]

        started = time.perf_counter()
        for index, (customer, day) in enumerate(sample):
            request = DecisionRequest(f"CMP-{index}", customer, day, "sv", 3)
            decide(
                request,
                source,
                catalog,
                policy="model",
                scorer=scorer,
                recently_declined=frozenset(),
            )
        served_seconds = time.perf_counter() - started

        # The same invoices through the engine's many-invoice path, as the batch endpoint
        # decides the HTTP load's batches: 100 per engine call, the models once per step.
        started = time.perf_counter()
        for first in range(0, len(sample), BATCH_SIZE):
            decide_many(
                [
                    DecisionCall(
                        DecisionRequest(f"CMP-{index}", customer, day, "sv", 3),
                        policy="model",
                        scorer=scorer,
                    )
                    for index, (customer, day) in enumerate(
                        sample[first : first + BATCH_SIZE], start=first
                    )
                ],
                source,
                catalog,
            )
        batched_seconds = time.perf_counter() - started

        from features.store import open_store

        store = open_store(settings)
        service = store.get_feature_service("offer_ranker_v1")
        pyfunc_ranker = mlflow.pyfunc.load_model("models:/offer-ranker@champion")
        pyfunc_churn = mlflow.pyfunc.load_model("models:/churn-risk@champion")
        booster = scorer._ranker.booster
        consent_refs = [f"customer_consent:{n}" for n in ("consent_marketing", "segment")]
        started = time.perf_counter()
        for customer, day in sample:
            offers = [o for o in catalog.offers if o.is_valid_on(day)]
            store.get_online_features(
                features=consent_refs, entity_rows=[{CUSTOMER_KEY: customer}]
            ).to_df()
            frame = store.get_online_features(
                features=service,
                entity_rows=[{CUSTOMER_KEY: customer, "offer_id": o.offer_id} for o in offers],
                full_feature_names=False,
            ).to_df()
            frame["offer_kind_code"] = frame["offer_kind_code"].fillna(
                pd.Series([OFFER_KIND_CODES[o.kind] for o in offers])
            )
            inputs = add_derived_columns(frame)
            inputs["segment_is_business"] = 0.0
            model_frame = inputs[RANKER_FEATURES].astype(float)
            pyfunc_ranker.predict(model_frame)
            booster.predict(model_frame.to_numpy(), pred_contrib=True)
            pyfunc_churn.predict(model_frame.iloc[:1][scorer.churn.feature_names])
        straightforward_seconds = time.perf_counter() - started
    finally:
        os.environ.clear()
        os.environ.update(previous)
    served_rate = len(sample) / served_seconds
    straightforward_rate = len(sample) / straightforward_seconds
    return {
        "decisions": len(sample),
        "served_engine_decisions_per_s": round(served_rate, 1),
        "served_engine_ms_per_decision": round(1000 * served_seconds / len(sample), 3),
        "straightforward_decisions_per_s": round(straightforward_rate, 1),
        "straightforward_ms_per_decision": round(1000 * straightforward_seconds / len(sample), 3),
        "speedup": round(served_rate / straightforward_rate, 2),
        "served_engine_batch_of_100_decisions_per_s": round(len(sample) / batched_seconds, 1),
        "served_engine_batch_of_100_ms_per_decision": round(
            1000 * batched_seconds / len(sample), 3
        ),
        "straightforward_path": (
            "Feast SDK get_online_features(feature service offer_ranker_v1 incl. on-demand plan "
            "fit, every candidate).to_df(), MLflow pyfunc predict for ranker and churn, "
            "pred_contrib on every candidate"
        ),
    }


def run(quick: bool = False) -> dict[str, Any]:
    customers_in_world = world_customers(quick)
    work = prepare_world(customers_in_world)
    invoices = newest_month_invoices(work)
    # Each run starts at a place of its own in the shuffled list, so that runs on the same world
    # do not decide the same customers again and again.
    start = int(np.random.default_rng().integers(len(invoices)))
    figures: dict[str, Any] = {
        "customers_in_world": customers_in_world,
        "customers_drawn_from": len(invoices),
        "first_invoice_drawn": start,
        "invoice_dates": sorted({invoice_date for _, invoice_date in invoices}),
        "quick": quick,
    }
    warm_page_cache(work / "feast" / "online.db")
    figures["in_process"] = in_process_comparison(_env(work), invoices, 200 if quick else 1000)
    figures["page_cache_warm_up_s"] = warm_page_cache(work / "feast" / "online.db")
    figures["http_sqlite"] = serve_and_drive(_env(work), invoices, quick, "sqlite", start)
    if not quick:
        # Each carries on where the run before it stopped: customers decided minutes before
        # would find their pages warm and their decisions in the log.
        drawn = figures["http_sqlite"]["next_invoice"]
        for kind in ("normal", "memory"):
            diagnosis = log_diagnosis(_env(work), invoices, drawn, kind)
            figures[f"http_sqlite_log_{kind}"] = diagnosis
            drawn = diagnosis["next_invoice"]
    redis_env = prepare_redis(work)
    figures["http_redis"] = serve_and_drive(redis_env, invoices, quick, "redis", start)
    saturation = max(
        figures["http_sqlite"]["saturation_rate_per_s"],
        figures["http_redis"]["saturation_rate_per_s"],
    )
    figures["throughput_vs_straightforward"] = round(
        saturation / figures["in_process"]["straightforward_decisions_per_s"], 2
    )
    write_result("api", figures)
    return figures
