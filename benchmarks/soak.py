"""The invoice offer API held at a constant, moderate load for minutes: does anything drift?

``offers serve`` runs pinned to one CPU (``taskset``) on a prepared world (simulate → retrain, the
SQLite online store and a fresh SQLite decision log); a load process pinned to the other CPU sends
fresh invoices to ``POST /v1/offers`` and events about the offers shown to ``POST /v1/events`` on
a fixed schedule (open loop: latency counts from each request's due time). Every window (30 s by
default) the load process reads, for the server's process, its resident memory, open file
descriptors and threads from ``/proc``, the size of the decision log's and the online store's
write-ahead logs, and the window's client and server-side (``Server-Timing``) latencies. The
series and the drift (first window against last) go to ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import multiprocessing
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.api import (
    API_KEY,
    _env,
    _free_port,
    _wait_ready,
    billed_customers,
    prepare_world,
    warm_page_cache,
)
from benchmarks.runner import pinned, split_cores, write_result

SOAK_CUSTOMERS = 5000
SOAK_MONTHS = 15
DEFAULT_MINUTES = 30.0
QUICK_MINUTES = 2.0
WINDOW_S = 30.0
QUICK_WINDOW_S = 10.0
OFFERS_PER_S = 20.0
EVENTS_PER_S = 5.0
REQUEST_TIMEOUT_S = 10.0
SERVER_CPU, LOAD_CPU = split_cores()


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


class _Window:
    """What one stream's requests of one window did."""

    def __init__(self) -> None:
        self.client_ms: list[float] = []
        self.server_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.degraded = 0

    def add(
        self, client_ms: float, server_ms: float | None, status: str, degraded: bool = False
    ) -> None:
        self.degraded += degraded
        self.client_ms.append(client_ms)
        if server_ms is not None:
            self.server_ms.append(server_ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self) -> dict[str, Any]:
        return {
            "answered": len(self.client_ms),
            "statuses": dict(sorted(self.statuses.items())),
            "degraded": self.degraded,
            "client_p50_ms": _percentile(self.client_ms, 50),
            "client_p99_ms": _percentile(self.client_ms, 99),
            "client_max_ms": round(max(self.client_ms), 2) if self.client_ms else None,
            "server_p50_ms": _percentile(self.server_ms, 50),
            "server_p99_ms": _percentile(self.server_ms, 99),
        }


def _server_ms(header: str | None) -> float | None:
    """``app;dur=1.234`` → 1.234."""
    for part in (header or "").split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    return None


def process_sample(pid: int, files: dict[str, Path]) -> dict[str, Any]:
    """Resident memory (MiB), open file descriptors and threads of ``pid``, and each file's size
    (MiB; 0 when it does not exist)."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in status}
    sample: dict[str, Any] = {
        "rss_mib": round(int(fields["VmRSS"][0]) / 1024, 1),
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"][0]),
    }
    for name, path in files.items():
        size = path.stat().st_size if path.exists() else 0
        sample[f"{name}_mib"] = round(size / 2**20, 2)
    return sample


async def _drive(
    port: int,
    pid: int,
    customers: list[str],
    files: dict[str, Path],
    minutes: float,
    window_s: float,
    tag: str,
) -> list[dict[str, Any]]:
    import httpx

    rng = random.Random(7)
    shown: list[tuple[str, str]] = []  # (decision_id, offer_id) of offers answered so far
    invoices = itertools.count()
    events = itertools.count()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    windows: dict[str, _Window] = {"offers": _Window(), "events": _Window()}
    in_flight: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    async def send(
        client: httpx.AsyncClient, stream: str, path: str, body: dict[str, Any], due: float
    ) -> None:
        window = windows[stream]  # the window the request was due in
        degraded = False
        try:
            response = await client.post(path, json=body)
            status = str(response.status_code)
            server_ms = _server_ms(response.headers.get("server-timing"))
            if stream == "offers" and response.status_code == 200:
                answer = response.json()
                degraded = answer.get("degraded") is not None
                shown.extend((answer["decision_id"], o["offer_id"]) for o in answer["offers"])
                del shown[:-5000]
        except httpx.HTTPError as error:
            status, server_ms = type(error).__name__, None
        window.add((time.perf_counter() - due) * 1000.0, server_ms, status, degraded)

    def offer_body() -> dict[str, Any]:
        index = next(invoices)
        return {
            "invoice_id": f"SOAK-{tag}-{index}",
            "customer_id": customers[index % len(customers)],
            "invoice_date": today,
            "locale": "sv",
            "max_offers": 3,
        }

    def event_body() -> dict[str, Any] | None:
        if not shown:
            return None
        decision_id, offer_id = rng.choice(shown)
        return {
            "event_id": f"SOAK-EV-{tag}-{next(events)}",
            "decision_id": decision_id,
            "offer_id": offer_id,
            "type": rng.choice(["impression", "impression", "click", "decline"]),
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        }

    async def pace(client: httpx.AsyncClient, stream: str, path: str, rate: float, end: float):
        interval = 1.0 / rate
        due = time.perf_counter()
        while due < end:
            body = offer_body() if stream == "offers" else event_body()
            if body is not None:
                task = asyncio.create_task(send(client, stream, path, body, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    series: list[dict[str, Any]] = []
    started = time.perf_counter()
    end = started + minutes * 60.0
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        limits=limits,
        timeout=REQUEST_TIMEOUT_S,
    ) as client:
        pacers = [
            asyncio.create_task(pace(client, "offers", "/v1/offers", OFFERS_PER_S, end)),
            asyncio.create_task(pace(client, "events", "/v1/events", EVENTS_PER_S, end)),
        ]
        window_end = started + window_s
        while window_end <= end + 0.5:
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            closed, windows["offers"], windows["events"] = (
                dict(windows),
                _Window(),
                _Window(),
            )
            # Answers still in flight land in the new window's lists: a stalled window shows its
            # stall in the next one rather than dropping it.
            sample = {
                "t_s": round(time.perf_counter() - started, 1),
                **process_sample(pid, files),
                "offers": closed["offers"].summary(),
                "events": closed["events"].summary(),
            }
            series.append(sample)
            print(
                f"soak t={sample['t_s']:.0f}s rss={sample['rss_mib']}MiB "
                f"fds={sample['open_fds']} threads={sample['threads']} "
                f"log_wal={sample.get('decision_log_wal_mib')}MiB "
                f"offers p99 client={sample['offers']['client_p99_ms']} "
                f"server={sample['offers']['server_p99_ms']} ms "
                f"statuses={sample['offers']['statuses']}",
                file=sys.stderr,
                flush=True,
            )
            window_end += window_s
        await asyncio.gather(*pacers, return_exceptions=True)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=REQUEST_TIMEOUT_S + 5)
    return series


def _load_process(
    port: int,
    pid: int,
    customers: list[str],
    files: dict[str, Path],
    minutes: float,
    window_s: float,
    tag: str,
    out: Any,
) -> None:
    if LOAD_CPU is not None:
        os.sched_setaffinity(0, {LOAD_CPU})
    out.put(asyncio.run(_drive(port, pid, customers, files, minutes, window_s, tag)))


def drift(series: list[dict[str, Any]]) -> dict[str, Any]:
    """The last window against the first, and the least-squares slope of memory per hour."""
    first, last = series[0], series[-1]
    hours = np.asarray([s["t_s"] for s in series]) / 3600.0
    rss = np.asarray([s["rss_mib"] for s in series])
    slope = float(np.polyfit(hours, rss, 1)[0]) if len(series) > 2 else None
    # The second half only: past the warm-up (caches, pools, the allocator's arenas filling).
    half = len(series) // 2
    late_slope = (
        float(np.polyfit(hours[half:], rss[half:], 1)[0]) if len(series) - half > 2 else None
    )
    figures: dict[str, Any] = {
        "first_window_t_s": first["t_s"],
        "last_window_t_s": last["t_s"],
        "rss_mib": [first["rss_mib"], last["rss_mib"]],
        "rss_change_mib": round(last["rss_mib"] - first["rss_mib"], 1),
        "rss_slope_mib_per_hour": None if slope is None else round(slope, 1),
        "rss_slope_second_half_mib_per_hour": None if late_slope is None else round(late_slope, 1),
        "open_fds": [first["open_fds"], last["open_fds"]],
        "threads": [first["threads"], last["threads"]],
        "rss_max_mib": float(rss.max()),
        "open_fds_max": max(s["open_fds"] for s in series),
        "threads_max": max(s["threads"] for s in series),
    }
    for name in ("decision_log_wal_mib", "online_store_wal_mib", "decision_log_mib"):
        figures[name] = [first[name], last[name]]
        figures[f"{name.removesuffix('_mib')}_max_mib"] = max(s[name] for s in series)
    for stream in ("offers", "events"):
        for measure in ("client_p99_ms", "server_p99_ms"):
            values = [s[stream][measure] for s in series if s[stream][measure] is not None]
            if not values:
                continue
            before, after = first[stream][measure], last[stream][measure]
            figures[f"{stream}_{measure}"] = [before, after]
            figures[f"{stream}_{measure}_max_window"] = max(values)
            if before and after:
                figures[f"{stream}_{measure}_ratio_last_to_first"] = round(after / before, 2)
    return figures


def run(quick: bool = False, minutes: float | None = None) -> dict[str, Any]:
    minutes = minutes if minutes is not None else (QUICK_MINUTES if quick else DEFAULT_MINUTES)
    window_s = QUICK_WINDOW_S if quick or minutes < 5 else WINDOW_S
    work = prepare_world(SOAK_CUSTOMERS, months=SOAK_MONTHS)
    customers = billed_customers(work)
    tag = str(time.time_ns())
    run_dir = work / f"soak-{tag}"
    run_dir.mkdir()
    log_file = run_dir / "offers.db"
    env = {**_env(work), "OFFERS_DATABASE_URL": f"sqlite:///{log_file}"}
    files = {
        "decision_log": log_file,
        "decision_log_wal": Path(f"{log_file}-wal"),
        "online_store_wal": work / "feast" / "online.db-wal",
    }
    warm_page_cache(work / "feast" / "online.db")
    port = _free_port()
    started = time.perf_counter()
    with (run_dir / "server.log").open("wb") as server_log:
        server = subprocess.Popen(
            pinned(
                [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)], SERVER_CPU
            ),
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(port)
        startup_s = round(time.perf_counter() - started, 1)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        load = context.Process(
            target=_load_process,
            args=(port, server.pid, customers, files, minutes, window_s, tag, queue),
        )
        load.start()
        series: list[dict[str, Any]] = queue.get(timeout=minutes * 60 + 120)
        load.join(timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)
    error_lines = sum(
        '"level": "ERROR"' in line or '"levelname": "ERROR"' in line
        for line in (run_dir / "server.log").read_text(errors="replace").splitlines()
    )
    totals = {
        stream: {
            "answered": sum(s[stream]["answered"] for s in series),
            "statuses": _sum_statuses(s[stream]["statuses"] for s in series),
            "degraded": sum(s[stream]["degraded"] for s in series),
        }
        for stream in ("offers", "events")
    }
    figures: dict[str, Any] = {
        "minutes": minutes,
        "window_s": window_s,
        "customers_in_world": SOAK_CUSTOMERS,
        "offers_per_s": OFFERS_PER_S,
        "events_per_s": EVENTS_PER_S,
        "server_cpu": SERVER_CPU,
        "load_generator_cpu": LOAD_CPU,
        "server_startup_s": startup_s,
        "online_store": "sqlite",
        "decision_log": "sqlite",
        "totals": totals,
        "server_error_log_lines": error_lines,
        "drift": drift(series),
        "series": series,
    }
    write_result("soak", figures)
    return figures


def _sum_statuses(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for status, n in count.items():
            total[status] = total.get(status, 0) + n
    return dict(sorted(total.items()))
