"""The real server under load while what it needs fails: its Redis online store killed and paused,
itself killed with SIGKILL mid-write, its PostgreSQL decision log's connections terminated and then
black-holed. The server runs on one core and the load on the other; each phase's figures are
printed and written to benchmarks/results/faults.json."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import httpx
import pytest
import sqlalchemy as sa

from core.database import sqlalchemy_url
from core.settings import Settings
from tests.factories.api import build_feast_store, just_now
from tests.faults.figures import (
    STEPS,
    Targets,
    answers,
    degraded,
    latency_ms,
    phase_figures,
    record_figures,
    step_histogram,
    steps_over_100_ms,
)
from tests.faults.load import PacedLoad, Payload, Sent, Stream, live_probes
from tests.faults.scenario import (
    FEATURE_STORE_UNAVAILABLE,
    check_live,
    first_ok_after,
    is_full,
    judge_latency,
    offers_of,
    offers_stream,
    seconds_to_recovery,
    server_values,
    settled,
    slowest_s,
    store_settings,
)
from tests.faults.services import (
    RENDERER,
    BlackHoleProxy,
    Cores,
    OffersServer,
    PreloadedServer,
    PrivateRedis,
    require_program,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

# The targets of issue 12.
# Offers answers while the online store is down or paused: issue 12 asked it of each answer; the
# test judges them with judge_latency (the slowest is recorded either way).
DEGRADED_WITHIN_S = 0.200
REDIS_RECOVERY_S = 15.0  # full answers again after Redis is back with its rows
POSTGRES_RECOVERY_S = 30.0  # full answers again after PostgreSQL answers again
LONGEST_ANSWER_S = 15.0  # no request waits longer while PostgreSQL fails


# Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A real Feast store of the factory customers on SQLite; the servers only read it."""
    base = tmp_path_factory.mktemp("sqlite-store")
    settings = store_settings(base)
    build_feast_store(settings)
    return settings


# 1. Redis killed, then paused -------------------------------------------------------------------


REDIS_OFFERS_PER_S = 50.0
LIVE_PER_S = 20.0
HEALTHY_S = 3.0
REDIS_DOWN_S = 5.0
PAUSE_S = 3
STEADY_S = 2.0


def test_redis_killed_then_paused_answers_degraded_fast_and_recovers(
    tmp_path: Path, cores: Cores, empty_registry: dict[str, str]
) -> None:
    """At 50 offers a second: a killed Redis and a Redis stuck in DEBUG SLEEP give degraded 200s
    (within 200 ms, none as long as a second), /health/live stays fast, and full answers
    come back once Redis does."""
    private = PrivateRedis(require_program("redis-server"), tmp_path / "redis")
    private.start()
    try:
        store = store_settings(tmp_path / "store", online_store=private.url)
        build_feast_store(store)
        # The store's rows, to load into the restarted (empty) Redis as a materialize would.
        with private.client() as client:
            rows = {key: client.dump(key) for key in client.scan_iter()}
        assert rows, "the store has rows in Redis"
        environment = server_values(store, empty_registry, f"sqlite:///{tmp_path / 'offers.db'}")
        with OffersServer(environment, tmp_path / "server.log", cores.server) as server:
            startup_s = server.start()
            load = PacedLoad(
                server.base_url,
                RENDERER,
                [
                    offers_stream(REDIS_OFFERS_PER_S, "R"),
                    live_probes(LIVE_PER_S),
                ],
                cpu=cores.load,
                request_timeout_s=10.0,
            ).start()
            try:
                marks, steps = _redis_phases(load, private, rows, lambda: _steps(server.base_url))
            finally:
                sent = load.stop()
    finally:
        private.kill()

    phases = ("healthy", "killed", "after_kill", "paused", "after_pause")
    figures: dict[str, Any] = {
        "offers_per_s": REDIS_OFFERS_PER_S,
        "server_startup_s": round(startup_s, 1),
        "cores": {"server": cores.server, "load": cores.load},
        "phases": {phase: phase_figures(sent, phase) for phase in phases},
        "restarted_empty": phase_figures(sent, "restarted_empty"),
        "recovery_after_restart_s": round(
            seconds_to_recovery(
                offers_of(sent), marks["restored"], marks["pause_started"], is_full
            ),
            2,
        ),
        "recovery_after_pause_s": round(
            seconds_to_recovery(offers_of(sent), marks["pause_ended"], marks["stopped"], is_full), 2
        ),
        "pause_s": round(marks["pause_ended"] - marks["pause_started"], 2),
        # The server's own step times while Redis was dead, so that a slow answer says where
        # its time went: ``decide`` holds the failed feature reads, ``log`` the log's commit.
        "killed_steps": None
        if steps["killed"] is None or steps["restarting"] is None
        else {
            step: steps_over_100_ms(steps["killed"], steps["restarting"], step) for step in STEPS
        },
    }

    # A request sent just before a fault began may be answered after it: each phase is judged on
    # the requests sent in it and answered before the next fault began.
    healthy = settled(sent, "healthy", marks["killing"])
    killed = settled(sent, "killed", marks["restarting"])
    paused = settled(sent, "paused", marks["stopped"])
    assert healthy and killed and paused, "offers were asked in every phase"
    targets = Targets()
    targets.check(
        "healthy: full answers with offers",
        all(is_full(s) and s.json()["offers"] for s in healthy),
        sum(not (is_full(s) and s.json()["offers"]) for s in healthy),
        "0 otherwise",
    )
    for phase, answered in (("killed", killed), ("paused", paused)):
        statuses = sorted({s.status or 0 for s in answered})
        targets.check(f"{phase}: only 200", statuses == [200], statuses, "[200]")
    judge_latency(
        targets,
        "offers answers",
        {"killed": [s.latency_s for s in killed], "paused": [s.latency_s for s in paused]},
        DEGRADED_WITHIN_S,
    )
    reasons = sorted({str(degraded(s)) for s in killed})
    targets.check(
        "killed: every answer degraded",
        reasons == [FEATURE_STORE_UNAVAILABLE],
        reasons,
        f"[{FEATURE_STORE_UNAVAILABLE}]",
    )
    targets.check(
        "paused: answers degraded",
        any(degraded(s) == FEATURE_STORE_UNAVAILABLE for s in paused),
        sum(degraded(s) is not None for s in paused),
        "> 0",
    )
    check_live(targets, sent, phases)
    for fault in ("restart", "pause"):
        recovery = figures[f"recovery_after_{fault}_s"]
        targets.check(
            f"full answers again after the {fault}",
            recovery <= REDIS_RECOVERY_S,
            f"{recovery} s",
            f"<= {REDIS_RECOVERY_S:.0f} s",
        )
    for phase, before in (
        ("after_kill", marks["pause_started"]),
        ("after_pause", marks["stopped"]),
    ):
        answered = settled(sent, phase, before)
        targets.check(
            f"{phase}: every answer full",
            all(is_full(s) for s in answered),
            sum(not is_full(s) for s in answered),
            "0 otherwise",
        )
    record_figures("redis_killed_then_paused", {**figures, "targets": targets.checked})
    targets.assert_met()


def _steps(base_url: str) -> dict[str, dict[str, float]] | None:
    """The server's step histogram, or None when /metrics does not answer: a figure recorded,
    not judged, must not fail the test."""
    try:
        return step_histogram(base_url)
    except httpx.HTTPError:
        return None


def _redis_phases(
    load: PacedLoad,
    private: PrivateRedis,
    rows: dict[Any, Any],
    step_times: Callable[[], dict[str, dict[str, float]] | None],
) -> tuple[dict[str, float], dict[str, dict[str, dict[str, float]] | None]]:
    """Healthy, killed, back, paused, back; the moments each fault began and ended, and the
    server's step histogram as Redis died and as it restarted."""
    marks: dict[str, float] = {}
    steps: dict[str, dict[str, dict[str, float]] | None] = {}
    load.phase = "healthy"
    time.sleep(HEALTHY_S)  # a phase of fixed length, not a wait for a condition

    # Requests sent while a fault begins or ends may see either side of it: labelled apart.
    load.phase = "killing"
    marks["killing"] = time.monotonic()
    private.kill()
    load.phase = "killed"
    marks["killed"] = time.monotonic()
    steps["killed"] = step_times()
    time.sleep(REDIS_DOWN_S)
    steps["restarting"] = step_times()

    # Restarted without persistence, Redis is empty until its rows are loaded again: customers
    # read back as unknown (404) in between, as after a real restart before a materialize.
    load.phase = "restarted_empty"
    marks["restarting"] = time.monotonic()
    private.start()
    with private.client() as client:
        for key, value in rows.items():
            client.restore(key, 0, value, replace=True)
    marks["restored"] = time.monotonic()
    load.phase = "recovering_from_kill"
    wait_for(
        first_ok_after(load, marks["restored"], is_full),
        REDIS_RECOVERY_S,
        "a full answer after Redis restarted",
    )
    load.phase = "after_kill"
    time.sleep(STEADY_S)

    # DEBUG SLEEP blocks Redis's only thread: connections open, nothing answered.
    def pause() -> None:
        with private.client(timeout=PAUSE_S + 10) as client:
            client.execute_command("DEBUG", "SLEEP", PAUSE_S)

    pauser = threading.Thread(target=pause, name="redis-debug-sleep")
    load.phase = "paused"
    marks["pause_started"] = time.monotonic()
    pauser.start()
    pauser.join(PAUSE_S + 15)
    assert not pauser.is_alive(), "DEBUG SLEEP returned"
    marks["pause_ended"] = time.monotonic()
    load.phase = "recovering_from_pause"
    wait_for(
        first_ok_after(load, marks["pause_ended"], is_full),
        REDIS_RECOVERY_S,
        "a full answer after the pause",
    )
    load.phase = "after_pause"
    time.sleep(STEADY_S)
    marks["stopped"] = time.monotonic()
    return marks, steps


# 2. kill -9 of the server, SQLite and PostgreSQL decision logs -----------------------------------


KILLS = 10
# As many of the kills as fit in this time; each costs a server start (seconds on a busy core),
# and the last start and the replays follow.
KILL_TEST_BUDGET_S = 150.0
REPLAY_S = 5.0
KILL_OFFERS_PER_S = 40.0
KILL_EVENTS_PER_S = 20.0
KILL_AFTER_S = (0.3, 2.0)  # the random moment of each kill, after the server is ready


class Acknowledged:
    """The requests the server acknowledged, and decisions with offers to send events about."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.offers: dict[str, Sent] = {}  # by invoice_id
        self.events: dict[str, Sent] = {}  # by event_id
        self.shown: list[tuple[str, str]] = []  # (decision_id, offer_id)
        self.provisional = 0

    def note(self, sent: Sent) -> None:
        if sent.stream == "offers" and sent.status == 200:
            answer = sent.json()
            if answer["degraded"] is not None:  # replaced by the next decision, not replayed
                self.provisional += 1
                return
            self.offers[answer["invoice_id"]] = sent
            self.shown.extend((answer["decision_id"], o["offer_id"]) for o in answer["offers"])
        elif sent.stream == "events" and sent.status in (200, 202):
            self.events[sent.payload["event_id"]] = sent

    def next_event(self) -> Payload | None:
        """An event about an offer of a decision acknowledged so far (before earlier kills too);
        called in the load's process, where :meth:`note` keeps its own copy up to date."""
        if not self.shown:
            return None
        decision_id, offer_id = self.rng.choice(self.shown)
        return {
            # Each run's load process starts from this process's copy: a counter would start
            # again at every run, and an event id sent again with other values is refused (409).
            "event_id": f"EV-K-{uuid.uuid4().hex}",
            "decision_id": decision_id,
            "offer_id": offer_id,
            "type": self.rng.choice(["impression", "click", "decline"]),
            "occurred_at": just_now(),
        }


def _events_stream(rate_per_s: float, acknowledged: Acknowledged) -> Stream:
    return Stream("events", rate_per_s, "POST", "/v1/events", acknowledged.next_event)


def test_kill_9_of_the_server_loses_no_acknowledged_decision_or_event(
    tmp_path: Path, cores: Cores, empty_registry: dict[str, str], sqlite_store: Settings
) -> None:
    """SQLite decision log: offers and events at once, the server SIGKILLed at a random moment
    and started again, ten times: every 2xx is stored exactly once, the file is intact, and each
    acknowledged invoice replays byte for byte."""
    log_file = tmp_path / "offers.db"
    _kill_repeatedly(
        "server_kill_9_sqlite",
        tmp_path,
        cores,
        server_values(sqlite_store, empty_registry, f"sqlite:///{log_file}"),
        lambda: _read_log(sa.create_engine(f"sqlite:///{log_file}"), sqlite=True),
    )


@pytest.mark.postgres
def test_kill_9_of_the_server_loses_nothing_on_postgres(
    tmp_path: Path,
    cores: Cores,
    empty_registry: dict[str, str],
    sqlite_store: Settings,
    postgres_url: str,
    pg_schema: str,
) -> None:
    """PostgreSQL decision log: the same ten kills; every 2xx stored exactly once, each
    acknowledged invoice replays byte for byte."""
    separator = "&" if "?" in postgres_url else "?"
    database_url = f"{postgres_url}{separator}options=-csearch_path%3D{pg_schema}"
    _kill_repeatedly(
        "server_kill_9_postgres",
        tmp_path,
        cores,
        server_values(sqlite_store, empty_registry, database_url),
        lambda: _read_log(
            sa.create_engine(sqlalchemy_url(database_url), poolclass=sa.pool.NullPool),
            sqlite=False,
        ),
    )


def _kill_repeatedly(
    name: str,
    tmp_path: Path,
    cores: Cores,
    environment: dict[str, str],
    read_log: Callable[
        [], tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]], str]
    ],
) -> None:
    """Up to KILLS runs of load, each ended by a SIGKILL of the server at a random moment; then
    a last start, the replays, and the stored rows against what was acknowledged."""
    seed = int(os.environ.get("OFFERS_FAULT_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    acknowledged = Acknowledged(rng)
    sent: list[Sent] = []
    startups: list[float] = []
    kill_moments: list[float] = []
    began = time.monotonic()
    # Forked from a process that imported the app once: each start pays the app's start-up
    # (stores, models, warm-up on the log a killed server left), not the imports.
    with PreloadedServer(environment, tmp_path / "server.log", cores.server) as server:
        while len(kill_moments) < KILLS:
            startups.append(server.start())
            load = PacedLoad(
                server.base_url,
                RENDERER,
                [
                    # A prefix per run: no invoice id is asked twice.
                    offers_stream(KILL_OFFERS_PER_S, f"K{len(kill_moments) + 1}"),
                    _events_stream(KILL_EVENTS_PER_S, acknowledged),
                ],
                cpu=cores.load,
                request_timeout_s=10.0,
                on_answer=acknowledged.note,
            ).start()
            load.phase = f"run-{len(kill_moments) + 1}"
            kill_moments.append(rng.uniform(*KILL_AFTER_S))
            time.sleep(kill_moments[-1])  # the random moment is the point of the test
            server.kill()
            sent += load.stop()
            another_and_the_end = 2 * max(startups) + KILL_AFTER_S[1] + REPLAY_S
            if time.monotonic() - began + another_and_the_end > KILL_TEST_BUDGET_S:
                break
        # Started once more: what was acknowledged before any of the kills must be there.
        startups.append(server.start())
        replays = _replay(server.base_url, acknowledged.offers.values())
        server.stop()

    stored_decisions, stored_events, integrity = read_log()
    figures = {
        "seed": seed,
        # Up to KILLS, as many as fit in KILL_TEST_BUDGET_S with the server's start time.
        "kills": len(kill_moments),
        "kills_planned": KILLS,
        "kill_after_ready_s": [round(moment, 2) for moment in kill_moments],
        "startup_s": {
            "median": round(statistics.median(startups), 1),
            "max": round(max(startups), 1),
            "each": [round(s, 1) for s in startups],
        },
        "offers": {"sent": len(offers_of(sent)), "acknowledged": len(acknowledged.offers)},
        "events": {
            "sent": sum(s.stream == "events" for s in sent),
            "acknowledged": len(acknowledged.events),
        },
        "answers": answers(sent),
        "provisional_answers": acknowledged.provisional,
        "seconds": round(time.monotonic() - began, 1),
    }
    assert acknowledged.offers and acknowledged.events, "the server acknowledged something"

    def stored_once(
        acknowledged: dict[str, Sent],
        stored: dict[str, list[tuple[str, str]]],
        expected: Callable[[Sent], tuple[str, str]],
    ) -> int:
        """How many acknowledged requests are not stored exactly once, as acknowledged."""
        return sum(stored.get(key, []) != [expected(ack)] for key, ack in acknowledged.items())

    targets = Targets()
    targets.check("kills", len(kill_moments) == KILLS, len(kill_moments), str(KILLS))
    missing = stored_once(
        acknowledged.offers, stored_decisions, lambda a: (a.json()["decision_id"], a.body.decode())
    )
    targets.check("acknowledged decisions not stored exactly once", missing == 0, missing, "0")
    missing = stored_once(
        acknowledged.events,
        stored_events,
        lambda a: (a.payload["decision_id"], a.payload["offer_id"]),
    )
    targets.check("acknowledged events not stored exactly once", missing == 0, missing, "0")
    targets.check("integrity check", integrity == "ok", integrity, "ok")
    different = sum(replays[i] != ack.body for i, ack in acknowledged.offers.items())
    targets.check("replays not byte-identical", different == 0, different, "0")
    others = sorted({s.status or 0 for s in sent} - {0, 200, 202})
    targets.check("answers other than 200/202", not others, others, "[]")
    record_figures(name, {**figures, "targets": targets.checked})
    targets.assert_met()


def _replay(base_url: str, acknowledged: Iterable[Sent]) -> dict[str, bytes]:
    """Each acknowledged offers request asked again: the answer's bytes by invoice_id."""
    replayed: dict[str, bytes] = {}
    with httpx.Client(base_url=base_url, headers=RENDERER, timeout=10.0) as client:
        for ack in acknowledged:
            response = client.post("/v1/offers", json=ack.payload)
            replayed[ack.payload["invoice_id"]] = response.content
    return replayed


def _read_log(
    engine: sa.Engine, *, sqlite: bool
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]], str]:
    """Decisions by invoice_id, events by event_id, and the integrity check (SQLite's PRAGMA
    integrity_check; "ok" on PostgreSQL, whose own checks the rows above are), read from the
    log the killed servers wrote."""
    decisions: dict[str, list[tuple[str, str]]] = {}
    events: dict[str, list[tuple[str, str]]] = {}
    integrity = "ok"
    try:
        with engine.connect() as connection:
            if sqlite:
                integrity = str(connection.exec_driver_sql("PRAGMA integrity_check").scalar())
            for invoice_id, decision_id, response in connection.exec_driver_sql(
                "SELECT invoice_id, decision_id, response FROM decisions"
            ):
                decisions.setdefault(invoice_id, []).append((decision_id, response))
            for event_id, decision_id, offer_id in connection.exec_driver_sql(
                "SELECT event_id, decision_id, offer_id FROM events"
            ):
                events.setdefault(event_id, []).append((decision_id, offer_id))
    finally:
        engine.dispose()
    return decisions, events, integrity


# 3. PostgreSQL decision log: backends terminated, then black-holed ------------------------------


PG_OFFERS_PER_S = 24.0
PG_EVENTS_PER_S = 6.0  # with the offers, 30 requests a second
PG_LIVE_PER_S = 10.0
TERMINATE_S = 6.0
TERMINATE_EVERY_S = 1.0
# Longer than LONGEST_ANSWER_S: a request stuck on a connection that no longer answers would
# otherwise be freed by the end of the black hole and pass unnoticed.
BLACK_HOLE_S = 20.0
# Past LONGEST_ANSWER_S, so that a request that hangs is measured rather than cut off.
PG_REQUEST_TIMEOUT_S = 40.0


def _acceptable(sent: Sent) -> bool:
    """200/202, or 503 saying when to retry; never a 500, never no answer."""
    if sent.stream == "live":
        return sent.status == 200
    return sent.status in (200, 202) or (sent.status == 503 and sent.retry_after is not None)


def _stored(sent: Sent) -> bool:
    """A full offers answer, or an event stored."""
    return is_full(sent) if sent.stream == "offers" else sent.status in (200, 202)


@pytest.mark.postgres
def test_postgres_terminated_then_black_holed_answers_503_never_hangs_and_recovers(
    tmp_path: Path,
    cores: Cores,
    empty_registry: dict[str, str],
    sqlite_store: Settings,
    postgres_url: str,
    pg_schema: str,
) -> None:
    """At 30 requests a second through a proxy in front of PostgreSQL: the server's backends
    terminated every second, then the proxy black-holed for 20 s. Answers are 2xx or 503 with
    Retry-After, none takes longer than 15 s, and full answers are back within 30 s."""
    upstream = urlparse(postgres_url)
    proxy = BlackHoleProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432))
    application = f"offers-fault-{uuid.uuid4().hex[:8]}"
    user = quote(upstream.username or "postgres")
    password = f":{quote(upstream.password)}" if upstream.password else ""
    database_url = (
        f"postgresql://{user}{password}@127.0.0.1:{proxy.port}{upstream.path}"
        f"?application_name={application}&options=-csearch_path%3D{pg_schema}"
    )
    admin = sa.create_engine(sqlalchemy_url(postgres_url), poolclass=sa.pool.NullPool)
    acknowledged = Acknowledged(random.Random(12))
    marks: dict[str, float] = {}
    terminated = 0
    try:
        environment = server_values(sqlite_store, empty_registry, database_url)
        with OffersServer(environment, tmp_path / "server.log", cores.server) as server:
            startup_s = server.start()
            load = PacedLoad(
                server.base_url,
                RENDERER,
                [
                    offers_stream(PG_OFFERS_PER_S, "P"),
                    _events_stream(PG_EVENTS_PER_S, acknowledged),
                    live_probes(PG_LIVE_PER_S),
                ],
                cpu=cores.load,
                request_timeout_s=PG_REQUEST_TIMEOUT_S,
                on_answer=acknowledged.note,
            ).start()
            try:
                load.phase = "healthy"
                time.sleep(HEALTHY_S)

                load.phase = "terminated"
                marks["terminating"] = time.monotonic()
                while time.monotonic() - marks["terminating"] < TERMINATE_S:
                    terminated += _terminate_backends(admin, application)
                    time.sleep(TERMINATE_EVERY_S)
                marks["terminated_until"] = time.monotonic()
                load.phase = "recovering_from_terminate"
                wait_for(
                    first_ok_after(load, marks["terminated_until"], is_full),
                    POSTGRES_RECOVERY_S,
                    "a full answer after the terminations",
                )
                load.phase = "after_terminate"
                time.sleep(STEADY_S)

                load.phase = "black_hole"
                marks["black_hole"] = time.monotonic()
                proxy.black_hole()
                time.sleep(BLACK_HOLE_S)
                proxy.forward()
                marks["forwarding"] = time.monotonic()
                load.phase = "recovering_from_black_hole"
                wait_for(
                    first_ok_after(load, marks["forwarding"], is_full),
                    POSTGRES_RECOVERY_S,
                    "a full answer after the black hole",
                )
                load.phase = "after_black_hole"
                time.sleep(STEADY_S)
                marks["stopped"] = time.monotonic()
            finally:
                sent = load.stop()
    finally:
        proxy.close()
        admin.dispose()

    phases = (
        "healthy",
        "terminated",
        "recovering_from_terminate",
        "after_terminate",
        "black_hole",
        "recovering_from_black_hole",
        "after_black_hole",
    )
    requests = [s for s in sent if s.stream != "live"]
    figures: dict[str, Any] = {
        "requests_per_s": PG_OFFERS_PER_S + PG_EVENTS_PER_S,
        "server_startup_s": round(startup_s, 1),
        "backends_terminated": terminated,
        "black_hole_s": BLACK_HOLE_S,
        "phases": {phase: phase_figures(sent, phase) for phase in phases},
        "recovery_after_terminations_s": round(
            seconds_to_recovery(requests, marks["terminated_until"], marks["black_hole"], _stored),
            2,
        ),
        "recovery_after_black_hole_s": round(
            seconds_to_recovery(requests, marks["forwarding"], marks["stopped"], _stored), 2
        ),
        "longest_answer_s": round(slowest_s(requests), 2),
        "answers_past_15_s": sum(s.latency_s > LONGEST_ANSWER_S for s in requests),
        "black_hole_503_latency": latency_ms(
            [s.latency_s for s in requests if s.phase == "black_hole" and s.status == 503]
        ),
        "unacceptable": sorted(
            {f"{s.stream} {s.status or s.error}" for s in sent if not _acceptable(s)}
        ),
    }
    healthy = [s for s in requests if s.phase == "healthy" and s.answered_at < marks["terminating"]]
    assert terminated > 0 and healthy, "the server answered, then its connections were terminated"
    targets = Targets()
    targets.check(
        "healthy: every request stored",
        all(_stored(s) for s in healthy),
        sum(not _stored(s) for s in healthy),
        "0 otherwise",
    )
    targets.check(
        "answers other than 200/202 or 503 with Retry-After",
        not figures["unacceptable"],
        figures["unacceptable"],
        "[]",
    )
    targets.check(
        "longest answer",
        figures["longest_answer_s"] <= LONGEST_ANSWER_S,
        f"{figures['longest_answer_s']} s",
        f"<= {LONGEST_ANSWER_S:.0f} s",
    )
    for fault in ("terminations", "black_hole"):
        recovery = figures[f"recovery_after_{fault}_s"]
        targets.check(
            f"full answers again after the {fault.replace('_', ' ')}",
            recovery <= POSTGRES_RECOVERY_S,
            f"{recovery} s",
            f"<= {POSTGRES_RECOVERY_S:.0f} s",
        )
    check_live(targets, sent, phases)
    record_figures("postgres_terminated_then_black_holed", {**figures, "targets": targets.checked})
    targets.assert_met()


def _terminate_backends(admin: sa.Engine, application: str) -> int:
    """Terminate every backend of the server's (its application_name); how many there were."""
    with admin.begin() as connection:
        return len(
            connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :application"
                ),
                {"application": application},
            ).all()
        )
