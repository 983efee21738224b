"""``offers features materialize`` run, and killed with SIGKILL in the middle of its write, while
the server answers 50 offers a second from the same online store: SQLite, then Redis.

Two materializations are killed mid-transaction: the first one into an empty store (the server
has nothing to read: readiness must say so until a rerun repairs it), then a refresh of a store
that holds older values (the server keeps reading the last committed values: WAL mode, no reader
waits on the writer or on what the killed writer left behind). On Redis, which materialize writes
in pipelines without a transaction, the same two kills; readiness reads an offer's attributes,
which materialize writes last. The server runs on one core; the load and the materialize run on
the other."""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.settings import Settings
from tests.faults.figures import (
    STEPS,
    Targets,
    answers,
    degraded,
    latency_ms,
    phase_figures,
    record_figures,
    server_latency_ms,
    step_histogram,
    steps_over_100_ms,
)
from tests.faults.load import PacedLoad, Payload, Sent, Stream, live_probes
from tests.faults.scenario import (
    WITHIN_SHARE,
    check_live,
    first_ok_after,
    is_full,
    judge_latency,
    seconds_to_recovery,
    server_values,
)
from tests.faults.services import (
    RENDERER,
    ROOT,
    Cores,
    OffersServer,
    PrivateRedis,
    require_program,
    wait_for,
)
from tests.simulated_world import SimulatedTables, world_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

OFFERS_PER_S = 50.0
LIVE_PER_S = 10.0
READY_PER_S = 4.0
# The bound: no offers request waits longer on the store's writer (the feature timeout,
# 50 ms, is what a request may wait on the store; the rest is the decision and the log write).
STORE_WAIT_S = 0.100
RECOVERY_S = 15.0
STEADY_S = 3.0
OLD_END = "2026-06-01"  # the first materialization: values up to here; the refresh: up to now
LOCK_SEEN_S = 300.0  # materialize imports Feast and reads the feature tables before it writes
# Rows are written from the moment the lock is taken; a longer wait overslept a view's whole
# transaction on a busy machine (the test's own sleep stretched), and the kill came too late.
KILL_AFTER_LOCK_S = 0.02


def check_server_time(targets: Targets, writing: list[Sent]) -> None:
    """The app's own time (Server-Timing) of the offers sent while materialize wrote or after its
    kill: what a request waits on the store is inside it, while the client's latency also holds
    the two cores' queueing (recorded, not judged)."""
    by_phase: dict[str, list[float]] = {}
    for sent in writing:
        if sent.server_ms is not None:
            by_phase.setdefault(sent.phase, []).append(sent.server_ms / 1000)
    judge_latency(
        targets,
        "offers, server-side, while materialize writes or after its kill",
        by_phase,
        STORE_WAIT_S,
    )


def check_decide_steps(targets: Targets, steps: dict[str, int]) -> None:
    """The server's decide step (feature reads included) over the refresh and after its kill,
    judged as judge_latency judges a latency: over 100 ms for at most the share it allows of the
    decisions, none over 1 s (the histogram's bucket nearest STALL_S)."""
    allowed = (1 - WITHIN_SHARE) * steps["decisions"]
    targets.check(
        "refresh: decide steps (feature reads included) over 100 ms, and over 1 s",
        steps["decisions"] > 0 and steps["over_100_ms"] <= allowed and steps["over_1_s"] == 0,
        steps,
        f"<= {1 - WITHIN_SHARE:.0%} of > 0 decisions, and 0",
    )


@pytest.fixture(scope="module")
def features_world(simulated_tables: SimulatedTables, tmp_path_factory: pytest.TempPathFactory):
    """The shared world's feature tables, built once for this module; each test applies its own
    Feast registry and online store."""
    from features.pipeline import build_features

    root = tmp_path_factory.mktemp("materialize-world")
    settings = world_settings(root, data_dir=simulated_tables.settings.data_dir)
    build_features(settings=settings, features_dir=settings.features_dir)
    return settings


def _world_customers(settings: Settings, count: int = 500) -> list[str]:
    customers = pd.read_parquet(settings.data_dir / "customers.parquet", columns=["customer_id"])
    return customers["customer_id"].head(count).tolist()


def _invoices(customers: list[str], prefix: str) -> Callable[[], Payload]:
    numbers = itertools.count(1)

    def next_body() -> Payload:
        number = next(numbers)
        return {
            "invoice_id": f"{prefix}-{number}",
            "customer_id": customers[number % len(customers)],
            "invoice_date": "2026-11-30",
            "locale": "sv",
            "max_offers": 3,
        }

    return next_body


def _writer_holds_lock(database: Path) -> bool:
    """True while another connection holds the write lock of ``database`` (a write transaction
    is open); takes and releases the lock at once otherwise."""
    connection = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        return "locked" in str(error)
    finally:
        connection.close()


def _materialize(environment: dict[str, str], cpu: int | None, end: str | None) -> list[str]:
    """``offers features materialize`` on the load's core, at a low priority: a batch job beside
    the load generator, which must keep its schedule to measure the server."""
    command = ["nice", "-n", "10", sys.executable, "-m", "pipelines.cli", "features", "materialize"]
    command += ["--end", end] if end else []
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def _kill_mid_write(
    environment: dict[str, str], cpu: int | None, end: str | None, database: Path, log: Path
) -> float:
    """Start a materialize, SIGKILL it while its write transaction is open; the seconds from its
    start to the kill. Fails when it finished (or died) before it was seen writing."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            _materialize(environment, cpu, end),
            env=environment,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        while not _writer_holds_lock(database):
            if process.poll() is not None:
                pytest.fail(f"materialize exited ({process.returncode}) before it was seen writing")
            if time.monotonic() - started > LOCK_SEEN_S:
                pytest.fail(f"materialize did not start writing within {LOCK_SEEN_S} s")
            time.sleep(0.02)
        time.sleep(KILL_AFTER_LOCK_S)  # inside the transaction, past its BEGIN
        assert _writer_holds_lock(database), "materialize still writes at the moment of the kill"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return time.monotonic() - started


def test_materialize_killed_mid_write_never_stalls_requests_and_readiness_tells(
    tmp_path: Path, cores: Cores, empty_registry: dict[str, str], features_world: Settings
) -> None:
    """At 50 offers a second: a first materialize killed mid-write leaves the store empty and
    readiness 503 until a rerun repairs it; a refresh killed mid-write leaves the last committed
    values readable and readiness 200. No offers answer waits on the writer (p99 and max under
    100 ms while materialize writes and after its kill)."""
    from features.store import apply_repository

    settings = world_settings(
        tmp_path, data_dir=features_world.data_dir, features_dir=features_world.features_dir
    )
    apply_repository(settings)  # registry and empty tables, as before a first materialize
    database = Path(settings.feast_dir) / "online.db"
    assert database.exists(), "apply created the online store's file"
    environment = server_values(settings, empty_registry, f"sqlite:///{tmp_path / 'offers.db'}")
    customers = _world_customers(features_world)
    marks: dict[str, float] = {}
    kills: dict[str, float] = {}
    materialize_log = tmp_path / "materialize.log"

    with OffersServer(environment, tmp_path / "server.log", cores.server) as server:
        startup_s = server.start(until="/health/live")
        load = PacedLoad(
            server.base_url,
            RENDERER,
            [
                Stream("offers", OFFERS_PER_S, "POST", "/v1/offers", _invoices(customers, "M")),
                live_probes(LIVE_PER_S),
                Stream("ready", READY_PER_S, "GET", "/health/ready", dict),
            ],
            cpu=cores.load,
            request_timeout_s=10.0,
        ).start()
        try:
            load.phase = "empty"
            time.sleep(STEADY_S)

            load.phase = "first_materialize"
            kills["first_s"] = _kill_mid_write(
                environment, cores.load, OLD_END, database, materialize_log
            )
            load.phase = "after_first_kill"
            marks["first_killed"] = time.monotonic()
            time.sleep(STEADY_S)

            load.phase = "repair"
            with materialize_log.open("ab") as output:
                repaired = subprocess.run(
                    _materialize(environment, cores.load, OLD_END),
                    env=environment,
                    cwd=ROOT,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=300,
                    check=False,
                )
            assert repaired.returncode == 0, materialize_log.read_text(errors="replace")[-3000:]
            marks["repaired"] = time.monotonic()
            wait_for(
                first_ok_after(load, marks["repaired"], is_full),
                RECOVERY_S,
                "a full answer after the rerun of materialize",
            )
            load.phase = "repaired"
            time.sleep(STEADY_S)
            steps_before = step_histogram(server.base_url)

            load.phase = "refresh"
            marks["refresh"] = time.monotonic()
            kills["refresh_s"] = _kill_mid_write(
                environment, cores.load, None, database, materialize_log
            )
            load.phase = "after_refresh_kill"
            marks["refresh_killed"] = time.monotonic()
            time.sleep(STEADY_S)
            marks["stopped"] = time.monotonic()
            steps_after = step_histogram(server.base_url)
        finally:
            sent = load.stop()

    with sqlite3.connect(database) as connection:
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
    connection.close()

    phases = (
        "empty",
        "first_materialize",
        "after_first_kill",
        "repair",
        "repaired",
        "refresh",
        "after_refresh_kill",
    )

    def ready_statuses(phase: str, before: float) -> dict[str, int]:
        return answers(
            s for s in sent if s.stream == "ready" and s.phase == phase and s.answered_at < before
        )

    writing = [
        s
        for s in sent
        if s.stream == "offers"
        and s.phase in ("first_materialize", "after_first_kill", "refresh", "after_refresh_kill")
    ]
    figures: dict[str, Any] = {
        "offers_per_s": OFFERS_PER_S,
        "server_startup_s": round(startup_s, 1),
        "cores": {"server": cores.server, "load": cores.load},
        "materialize_start_to_kill_s": {name: round(value, 1) for name, value in kills.items()},
        "phases": {phase: phase_figures(sent, phase) for phase in phases},
        "readiness": {phase: ready_statuses(phase, marks["stopped"]) for phase in phases},
        "offers_while_writing_or_killed": {
            **latency_ms([s.latency_s for s in writing]),
            "server": server_latency_ms(writing),
            "answers": answers(writing),
        },
        "full_answers_after_repair_s": round(
            seconds_to_recovery(
                [s for s in sent if s.stream == "offers"],
                marks["repaired"],
                marks["refresh"],
                is_full,
            ),
            2,
        ),
        "integrity_check": str(integrity),
        # The server's own step times over the refresh and after its kill: ``decide`` holds
        # the feature reads, ``log`` the decision log write.
        "refresh_steps": {
            step: steps_over_100_ms(steps_before, steps_after, step) for step in STEPS
        },
    }
    targets = Targets()
    while_writing = figures["offers_while_writing_or_killed"]
    check_server_time(targets, writing)
    check_decide_steps(targets, figures["refresh_steps"]["decide"])
    # A store read that waits past the feature timeout (50 ms) answers degraded: none may.
    waited = sum(degraded(s) is not None for s in writing)
    targets.check(
        "offers while materialize writes or after its kill: reads past the feature timeout",
        waited == 0,
        waited,
        "0",
    )
    statuses = sorted(while_writing["answers"])
    targets.check(
        "offers answers while writing: only 200 and 404 (unknown in an empty store)",
        set(statuses) <= {"200", "404"},
        statuses,
        "200, 404",
    )
    for phase in ("empty", "after_first_kill"):
        found = figures["readiness"][phase]
        targets.check(
            f"{phase}: readiness 503",
            bool(found) and set(found) == {"503"},
            found,
            "503 only",
        )
    for phase in ("repaired", "after_refresh_kill"):
        found = figures["readiness"][phase]
        targets.check(
            f"{phase}: readiness 200", bool(found) and set(found) == {"200"}, found, "200 only"
        )
    after_refresh = [
        s for s in sent if s.stream == "offers" and s.phase in ("refresh", "after_refresh_kill")
    ]
    targets.check(
        "refresh killed mid-write: every offers answer full",
        bool(after_refresh) and all(is_full(s) for s in after_refresh),
        sum(not is_full(s) for s in after_refresh),
        "0 otherwise",
    )
    recovery = figures["full_answers_after_repair_s"]
    targets.check(
        "full answers after the rerun",
        recovery <= RECOVERY_S,
        f"{recovery} s",
        f"<= {RECOVERY_S:.0f} s",
    )
    targets.check("online store PRAGMA integrity_check", integrity == "ok", integrity, "ok")
    check_live(targets, sent, phases)
    record_figures("materialize_killed_mid_write_sqlite", {**figures, "targets": targets.checked})
    targets.assert_met()


# Redis ------------------------------------------------------------------------------------------

# The test polls Redis's own count of HSET calls (one per entity and view) this often while a
# materialize runs; at the first count inside the window it kills, with nothing in between.
REDIS_POLL_S = 0.002
REDIS_MATERIALIZE_S = 300.0


def _hset_calls(client: Any) -> int:
    """HSET calls the Redis server has run since it started (INFO commandstats)."""
    return int(client.info("commandstats").get("cmdstat_hset", {}).get("calls", 0))


def _kill_redis_mid_write(
    environment: dict[str, str],
    cpu: int | None,
    end: str | None,
    client: Any,
    window: tuple[int, int],
    log: Path,
) -> dict[str, Any]:
    """Start a materialize and SIGKILL it as soon as the HSETs it has run are strictly inside
    ``window`` (``low < written < high``, ``high`` what a whole run writes). What was written
    when the kill was decided and once it was dead, and the seconds from its start to the kill.
    Fails when it finished (or died) before it was seen inside the window."""
    low, high = window
    before = _hset_calls(client)
    with log.open("ab") as output:
        process = subprocess.Popen(
            _materialize(environment, cpu, end),
            env=environment,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        while True:
            written = _hset_calls(client) - before
            if low < written < high:
                process.send_signal(signal.SIGKILL)
                break
            if process.poll() is not None:
                pytest.fail(
                    f"materialize exited ({process.returncode}) after {written} of {high} "
                    f"writes, before it was seen between {low} and {high}"
                )
            if time.monotonic() - started > REDIS_MATERIALIZE_S:
                pytest.fail(f"materialize did not write within {REDIS_MATERIALIZE_S} s")
            time.sleep(REDIS_POLL_S)
        killed_s = time.monotonic() - started
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    # Commands the killed process had already sent are still run by Redis: read once it is dead.
    return {
        "start_to_kill_s": round(killed_s, 2),
        "writes_of_a_whole_run": high,
        "written_when_seen": written,
        "written_once_dead": _hset_calls(client) - before,
    }


def _reference_writes(features_world: Settings, folder: Path, url: str) -> dict[str, int]:
    """HSETs (entities) per view of an uninterrupted first materialize up to OLD_END and of the
    refresh after it, into another Redis database with its own registry: what a whole run of
    each writes."""
    from features.store import apply_repository, materialize

    settings = world_settings(
        folder,
        data_dir=features_world.data_dir,
        features_dir=features_world.features_dir,
        online_store=url,
    )
    apply_repository(settings)
    first = materialize(dt.datetime.fromisoformat(OLD_END), settings, show_progress=False)
    refresh = materialize(None, settings, show_progress=False)
    return {
        **{f"first:{load.view}": load.entities for load in first.views},
        **{f"refresh:{load.view}": load.entities for load in refresh.views},
    }


def test_materialize_into_redis_killed_mid_write_never_stalls_requests_and_readiness_tells(
    tmp_path: Path, cores: Cores, empty_registry: dict[str, str], features_world: Settings
) -> None:
    """At 50 offers a second from a private Redis: a first materialize killed once every
    customer view but the consent view is written (its pipelines have no transaction: part of
    the store is there, not the offers' attributes) leaves readiness 503 until a rerun repairs
    it; a refresh killed past half its writes leaves a mix of older and newer values, every one
    readable, and readiness 200. No offers answer waits on the writer (server-side within
    100 ms, none as long as a second, none degraded)."""
    from features.store import apply_repository

    private = PrivateRedis(require_program("redis-server"), tmp_path / "redis")
    private.start()
    try:
        reference = _reference_writes(features_world, tmp_path / "reference", f"{private.url}/1")
        first_total = sum(n for view, n in reference.items() if view.startswith("first:"))
        refresh_total = sum(n for view, n in reference.items() if view.startswith("refresh:"))
        consent = reference["first:customer_consent"]
        settings = world_settings(
            tmp_path,
            data_dir=features_world.data_dir,
            features_dir=features_world.features_dir,
            online_store=private.url,
        )
        apply_repository(settings)  # registry, and an empty database 0
        environment = server_values(settings, empty_registry, f"sqlite:///{tmp_path / 'offers.db'}")
        customers = _world_customers(features_world)
        marks: dict[str, float] = {}
        kills: dict[str, dict[str, Any]] = {}
        materialize_log = tmp_path / "materialize.log"
        with (
            private.client() as client,
            OffersServer(environment, tmp_path / "server.log", cores.server) as server,
        ):
            assert client.dbsize() == 0, "database 0 is empty before the first materialize"
            startup_s = server.start(until="/health/live")
            load = PacedLoad(
                server.base_url,
                RENDERER,
                [
                    Stream("offers", OFFERS_PER_S, "POST", "/v1/offers", _invoices(customers, "R")),
                    live_probes(LIVE_PER_S),
                    Stream("ready", READY_PER_S, "GET", "/health/ready", dict),
                ],
                cpu=cores.load,
                request_timeout_s=10.0,
            ).start()
            try:
                load.phase = "empty"
                time.sleep(STEADY_S)

                # Killed in its consent view (or just after it, before the offers' attributes):
                # every customer view but consent written, not the catalog's offers.
                load.phase = "first_materialize"
                kills["first"] = _kill_redis_mid_write(
                    environment,
                    cores.load,
                    OLD_END,
                    client,
                    (first_total - consent, first_total),
                    materialize_log,
                )
                load.phase = "after_first_kill"
                marks["first_killed"] = time.monotonic()
                kills["first"]["keys_once_dead"] = int(client.dbsize())
                time.sleep(STEADY_S)

                load.phase = "repair"
                with materialize_log.open("ab") as output:
                    repaired = subprocess.run(
                        _materialize(environment, cores.load, OLD_END),
                        env=environment,
                        cwd=ROOT,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        timeout=REDIS_MATERIALIZE_S,
                        check=False,
                    )
                assert repaired.returncode == 0, materialize_log.read_text(errors="replace")[-3000:]
                marks["repaired"] = time.monotonic()
                wait_for(
                    first_ok_after(load, marks["repaired"], is_full),
                    RECOVERY_S,
                    "a full answer after the rerun of materialize",
                )
                load.phase = "repaired"
                time.sleep(STEADY_S)
                steps_before = step_histogram(server.base_url)

                load.phase = "refresh"
                marks["refresh"] = time.monotonic()
                # Killed past half its writes: some views refreshed, one in part, some not.
                kills["refresh"] = _kill_redis_mid_write(
                    environment,
                    cores.load,
                    None,
                    client,
                    (refresh_total // 2, refresh_total),
                    materialize_log,
                )
                load.phase = "after_refresh_kill"
                marks["refresh_killed"] = time.monotonic()
                time.sleep(STEADY_S)
                marks["stopped"] = time.monotonic()
                steps_after = step_histogram(server.base_url)
            finally:
                sent = load.stop()
    finally:
        private.kill()

    phases = (
        "empty",
        "first_materialize",
        "after_first_kill",
        "repair",
        "repaired",
        "refresh",
        "after_refresh_kill",
    )

    def ready_statuses(phase: str, before: float) -> dict[str, int]:
        return answers(
            s for s in sent if s.stream == "ready" and s.phase == phase and s.answered_at < before
        )

    writing = [
        s
        for s in sent
        if s.stream == "offers"
        and s.phase in ("first_materialize", "after_first_kill", "refresh", "after_refresh_kill")
    ]
    figures: dict[str, Any] = {
        "offers_per_s": OFFERS_PER_S,
        "server_startup_s": round(startup_s, 1),
        "cores": {"server": cores.server, "load": cores.load},
        "writes_per_view_of_whole_runs": reference,
        "kills": kills,
        "phases": {phase: phase_figures(sent, phase) for phase in phases},
        "readiness": {phase: ready_statuses(phase, marks["stopped"]) for phase in phases},
        "offers_while_writing_or_killed": {
            **latency_ms([s.latency_s for s in writing]),
            "server": server_latency_ms(writing),
            "answers": answers(writing),
        },
        "full_answers_after_repair_s": round(
            seconds_to_recovery(
                [s for s in sent if s.stream == "offers"],
                marks["repaired"],
                marks["refresh"],
                is_full,
            ),
            2,
        ),
        "refresh_steps": {
            step: steps_over_100_ms(steps_before, steps_after, step) for step in STEPS
        },
    }
    targets = Targets()
    for name, killed in kills.items():
        targets.check(
            f"{name} materialize killed mid-write: writes done once it was dead",
            0 < killed["written_once_dead"] < killed["writes_of_a_whole_run"],
            killed["written_once_dead"],
            f"> 0 and < {killed['writes_of_a_whole_run']}",
        )
    while_writing = figures["offers_while_writing_or_killed"]
    check_server_time(targets, writing)
    check_decide_steps(targets, figures["refresh_steps"]["decide"])
    # A store read that waits past the feature timeout (50 ms) answers degraded: none may.
    waited = sum(degraded(s) is not None for s in writing)
    targets.check(
        "offers while materialize writes or after its kill: reads past the feature timeout",
        waited == 0,
        waited,
        "0",
    )
    statuses = sorted(while_writing["answers"])
    targets.check(
        "offers answers while writing: only 200 and 404 (unknown in an empty store)",
        set(statuses) <= {"200", "404"},
        statuses,
        "200, 404",
    )
    for phase in ("empty", "after_first_kill"):
        found = figures["readiness"][phase]
        targets.check(
            f"{phase}: readiness 503",
            bool(found) and set(found) == {"503"},
            found,
            "503 only",
        )
    for phase in ("repaired", "after_refresh_kill"):
        found = figures["readiness"][phase]
        targets.check(
            f"{phase}: readiness 200", bool(found) and set(found) == {"200"}, found, "200 only"
        )
    after_refresh = [
        s for s in sent if s.stream == "offers" and s.phase in ("refresh", "after_refresh_kill")
    ]
    targets.check(
        "refresh killed mid-write: every offers answer full",
        bool(after_refresh) and all(is_full(s) for s in after_refresh),
        sum(not is_full(s) for s in after_refresh),
        "0 otherwise",
    )
    recovery = figures["full_answers_after_repair_s"]
    targets.check(
        "full answers after the rerun",
        recovery <= RECOVERY_S,
        f"{recovery} s",
        f"<= {RECOVERY_S:.0f} s",
    )
    check_live(targets, sent, phases)
    record_figures("materialize_killed_mid_write_redis", {**figures, "targets": targets.checked})
    targets.assert_met()
