"""The decision log on SQLite and on PostgreSQL: idempotency, the race, frequency cap, export."""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from core.contract import OFFER_EVENTS, OUTCOMES
from core.tables import read_table, schema_problems
from serving.decision_log import DecisionLog, DecisionRecord, EventRecord, LoggedOffer
from serving.decision_log.database import create_log_engine
from serving.decision_log.export import merge_into_offer_events
from tests.factories.api import FakeFeatures, auth, just_now, make_app, offers_body, running

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
# An export after every outcome window of the decisions made around T0 has passed.
LATER = T0 + dt.timedelta(days=60)
# The indexes model monitoring reads a period through (serving.decision_log.schema).
REPLACING_INDEXES = (
    "ix_decisions_period",
    "ix_decisions_model_inputs",
    "ix_decision_offers_first",
    "ix_superseded_decisions_period",
)


def record(
    invoice_id: str,
    customer_id: str = "C1",
    offers: tuple[str, ...] = ("PLAN_30GB", "ADDON_DATA_10GB"),
    *,
    day: int = 30,
    decision_id: str | None = None,
    degraded: str | None = None,
) -> DecisionRecord:
    decision = decision_id or str(uuid.uuid4())
    created = T0.replace(day=day)
    return DecisionRecord(
        decision_id=decision,
        invoice_id=invoice_id,
        customer_id=customer_id,
        invoice_date=created.date(),
        created_at=created,
        policy="model",
        model_version="offer-ranker/1",
        experiment_key=None,
        experiment_variant=None,
        degraded=degraded,
        consent={"marketing": True, "profiling": True},
        response_json=f'{{"decision_id": "{decision}"}}',
        log={"churn_risk": 0.12},
        offers=tuple(
            LoggedOffer(offer, rank, 1.0, 10.0 * rank) for rank, offer in enumerate(offers, 1)
        ),
    )


def event(decision: DecisionRecord, offer: str, kind: str, minutes: int = 0) -> EventRecord:
    at = decision.created_at + dt.timedelta(minutes=minutes)
    return EventRecord(f"E-{uuid.uuid4().hex}", decision.decision_id, offer, kind, at, at)


@pytest.mark.parametrize(("query", "mode"), [("", 2), ("?synchronous=NORMAL", 1)])
def test_sqlite_commits_are_fsynced_unless_the_url_says_otherwise(
    tmp_path: Path, query: str, mode: int
) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}{query}")
    with log.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == mode
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    log.close()
    with pytest.raises(ValueError, match="synchronous=OFF"):
        DecisionLog(f"sqlite:///{tmp_path / 'other.db'}?synchronous=off")


def test_a_decision_is_stored_and_found(log: DecisionLog) -> None:
    first = record("INV-1")
    stored, created = log.record(first)
    assert created and stored.decision_id == first.decision_id
    found = log.find("INV-1")
    assert found == stored
    assert log.find("INV-2") is None
    assert log.offers_of(first.decision_id) == {"PLAN_30GB", "ADDON_DATA_10GB"}
    assert log.offers_of("nope") is None


def test_the_log_column_keeps_numpy_values_and_dates_and_nan_as_null(log: DecisionLog) -> None:
    """JSON has no NaN: an unknown figure is stored as null (PostgreSQL's jsonb would refuse the
    NaN Python writes), numpy scalars and arrays as plain numbers, dates in ISO form."""
    figures = {
        "churn_risk": np.float32(0.25),
        "offers": np.int64(3),
        "scores": np.array([0.5, 1.5]),
        "unknown": math.nan,
        "unbounded": math.inf,
        "invoice_date": dt.date(2026, 11, 20),
    }
    log.record(replace(record("INV-NUMPY"), log=figures))
    with log.engine.connect() as connection:
        stored = connection.execute(
            sa.select(log.tables.decisions.c.log).where(
                log.tables.decisions.c.invoice_id == "INV-NUMPY"
            )
        ).scalar_one()
    assert stored == {
        "churn_risk": 0.25,
        "offers": 3,
        "scores": [0.5, 1.5],
        "unknown": None,
        "unbounded": None,
        "invoice_date": "2026-11-20",
    }


def test_a_second_decision_for_an_invoice_returns_the_first(log: DecisionLog) -> None:
    first, second = record("INV-1"), record("INV-1", offers=("PLAN_5GB",))
    log.record(first)
    stored, created = log.record(second)
    assert not created and stored.decision_id == first.decision_id
    assert log.offers_of(first.decision_id) == {"PLAN_30GB", "ADDON_DATA_10GB"}
    assert log.offers_of(second.decision_id) is None


def test_racing_writers_for_one_invoice_leave_one_decision(log: DecisionLog) -> None:
    barrier = threading.Barrier(6)
    results: list[str] = []

    def write() -> None:
        barrier.wait()
        stored, _ = log.record(record("INV-RACE"))
        results.append(stored.decision_id)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and len(set(results)) == 1
    with log.engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(log.tables.decisions))
        assert rows.scalar_one() == 1


def test_simultaneous_writes_of_a_sqlite_log_never_meet_a_locked_database(
    tmp_path: Path,
) -> None:
    """The process's writes take turns before SQLite sees them: with SQLite's own waiting for a
    lock turned off, six threads writing at once all store their decisions."""
    log = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}")

    @sa.event.listens_for(log.engine, "checkout")
    def no_busy_wait(connection: Any, record: Any, proxy: Any) -> None:
        connection.execute("PRAGMA busy_timeout=0")

    barrier = threading.Barrier(6)
    failures: list[Exception] = []

    def write(writer: int) -> None:
        batch = [(record(f"INV-{writer}-{number}", f"C{writer}"), None) for number in range(40)]
        barrier.wait()
        try:
            log.record_many(batch)
        except Exception as error:  # "database is locked", were the writes not taking turns
            failures.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with log.engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(log.tables.decisions))
        assert rows.scalar_one() == 6 * 40
    log.close()


def test_reads_of_a_sqlite_log_never_wait_for_a_decision_write(tmp_path: Path) -> None:
    """While a decision write holds the process's turn, the look-ups a decision makes (its
    stored answer, the decline cap) still answer: in WAL mode no reader waits on a writer."""
    log = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}")
    log.record(record("INV-1", "C1"))
    answered = threading.Event()
    found: dict[str, Any] = {}

    def read() -> None:
        found.update(log.find_many(["INV-1"]))
        found["declines"] = log.recent_declines_many([("C1", "INV-2"), ("C2", "INV-3")], 3)
        answered.set()

    with log._sqlite_write:  # a decision write in progress
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert answered.wait(5.0), "a read waited for the decision write"
    assert found["INV-1"].customer_id == "C1"
    assert found["declines"] == {("C1", "INV-2"): frozenset(), ("C2", "INV-3"): frozenset()}
    log.close()


def _rows(log: DecisionLog, table: sa.Table, invoice_id: str) -> list[sa.RowMapping]:
    with log.engine.connect() as connection:
        query = sa.select(table).where(table.c.invoice_id == invoice_id)
        return list(connection.execute(query).mappings())


def test_a_degraded_decision_without_offers_is_provisional(log: DecisionLog) -> None:
    log.record(record("INV-DOWN", offers=(), degraded="feature_store_unavailable"))
    log.record(record("INV-RULES", degraded="model_unavailable"))  # the rules' offers shown
    log.record(record("INV-NONE", offers=()))  # nothing to show, nothing degraded
    provisional = {
        invoice: found.provisional
        for invoice in ("INV-DOWN", "INV-RULES", "INV-NONE")
        if (found := log.find(invoice)) is not None
    }
    assert provisional == {"INV-DOWN": True, "INV-RULES": False, "INV-NONE": False}


def test_a_provisional_decision_is_replaced_and_kept_for_audit(log: DecisionLog) -> None:
    degraded = record("INV-1", offers=(), degraded="feature_store_unavailable")
    log.record(degraded)
    fresh = record("INV-1")
    stored, created = log.record(fresh, superseding=degraded.decision_id)
    assert created and stored.decision_id == fresh.decision_id and not stored.provisional
    assert log.find("INV-1") == stored
    assert [row["decision_id"] for row in _rows(log, log.tables.decisions, "INV-1")] == [
        fresh.decision_id
    ]
    (audit,) = _rows(log, log.tables.superseded_decisions, "INV-1")
    assert (audit["decision_id"], audit["degraded"], audit["response"]) == (
        degraded.decision_id,
        "feature_store_unavailable",
        degraded.response_json,
    )
    assert audit["superseded_by"] == fresh.decision_id
    assert audit["created_at"] == degraded.created_at and audit["superseded_at"].tzinfo == dt.UTC
    assert log.offers_of(fresh.decision_id) == {"PLAN_30GB", "ADDON_DATA_10GB"}
    assert log.offers_of(degraded.decision_id) is None  # no longer a decision events can name


def test_a_replacement_after_another_one_answers_with_that_one(log: DecisionLog) -> None:
    degraded = record("INV-1", offers=(), degraded="feature_store_unavailable")
    log.record(degraded)
    first, second = record("INV-1"), record("INV-1", offers=("PLAN_5GB",))
    log.record(first, superseding=degraded.decision_id)
    stored, created = log.record(second, superseding=degraded.decision_id)
    assert not created and stored.decision_id == first.decision_id
    assert log.offers_of(second.decision_id) is None
    assert len(_rows(log, log.tables.superseded_decisions, "INV-1")) == 1


def test_many_decisions_are_stored_together_and_found_together(log: DecisionLog) -> None:
    degraded = record("INV-2", offers=(), degraded="feature_store_unavailable")
    log.record(degraded)
    fresh = [record("INV-1"), record("INV-2"), record("INV-3", "C2", offers=())]
    written = log.record_many(
        [(fresh[0], None), (fresh[1], degraded.decision_id), (fresh[2], None)]
    )
    assert [(stored.decision_id, created) for stored, created in written] == [
        (decision.decision_id, True) for decision in fresh
    ]
    found = log.find_many(["INV-3", "INV-1", "INV-9", "INV-2", "INV-1"])
    assert {invoice: stored.decision_id for invoice, stored in found.items()} == {
        "INV-1": fresh[0].decision_id,
        "INV-2": fresh[1].decision_id,
        "INV-3": fresh[2].decision_id,
    }
    assert found["INV-3"].customer_id == "C2" and not found["INV-2"].provisional
    assert log.offers_of(fresh[0].decision_id) == {"PLAN_30GB", "ADDON_DATA_10GB"}
    assert len(_rows(log, log.tables.superseded_decisions, "INV-2")) == 1


def test_invoices_another_writer_stored_first_keep_its_decisions(log: DecisionLog) -> None:
    """The clash rolls the whole write back; the invoices nobody else decided are written again,
    once, and the others answer with what the other writer stored."""
    other = record("INV-2", "C9")
    log.record(other)
    mine = [record("INV-1"), record("INV-2"), record("INV-3")]
    written = log.record_many([(decision, None) for decision in mine])
    assert [(stored.decision_id, created) for stored, created in written] == [
        (mine[0].decision_id, True),
        (other.decision_id, False),
        (mine[2].decision_id, True),
    ]
    assert written[1][0].customer_id == "C9"
    assert log.offers_of(mine[1].decision_id) is None
    assert {stored.decision_id for stored in log.find_many(["INV-1", "INV-3"]).values()} == {
        mine[0].decision_id,
        mine[2].decision_id,
    }


def test_racing_replacements_of_a_provisional_decision_leave_one_decision(
    log: DecisionLog,
) -> None:
    degraded = record("INV-RACE", offers=(), degraded="feature_store_unavailable")
    log.record(degraded)
    barrier = threading.Barrier(6)
    results: list[tuple[str, bool]] = []
    failures: list[BaseException] = []

    def replace() -> None:
        barrier.wait()
        try:
            stored, created = log.record(record("INV-RACE"), superseding=degraded.decision_id)
        except BaseException as error:  # the test fails below, naming it
            failures.append(error)
            return
        results.append((stored.decision_id, created))

    threads = [threading.Thread(target=replace) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len({decision_id for decision_id, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1
    assert len(_rows(log, log.tables.decisions, "INV-RACE")) == 1
    (audit,) = _rows(log, log.tables.superseded_decisions, "INV-RACE")
    assert audit["superseded_by"] == results[0][0]


def test_the_invoice_being_decided_is_not_one_of_the_invoices_before_it(
    log: DecisionLog,
) -> None:
    earlier = [record(f"INV-{day}", day=day, offers=(f"ADDON_{day}",)) for day in (1, 2, 3)]
    for decision in earlier:
        log.record(decision)
        log.record_event(event(decision, f"ADDON_{decision.created_at.day}", "decline"))
    log.record(record("INV-4", day=4, offers=(), degraded="feature_store_unavailable"))
    # Deciding INV-4 again: its provisional decision does not push INV-1 out of the window.
    assert log.recent_declines("C1", 3, deciding="INV-4") == {"ADDON_1", "ADDON_2", "ADDON_3"}
    assert log.recent_declines("C1", 3) == {"ADDON_2", "ADDON_3"}  # a fifth invoice's view


def test_a_log_from_before_superseded_decisions_gains_the_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    old = DecisionLog(url)
    degraded = record("INV-1", offers=(), degraded="feature_store_unavailable")
    old.record(degraded)
    with old.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE superseded_decisions")
    old.close()
    reopened = DecisionLog(url)
    found = reopened.find("INV-1")
    assert found is not None and found.provisional
    fresh = record("INV-1")
    _, created = reopened.record(fresh, superseding=degraded.decision_id)
    assert created and len(_rows(reopened, reopened.tables.superseded_decisions, "INV-1")) == 1
    reopened.close()


def test_a_holdout_decision_has_no_offers(log: DecisionLog) -> None:
    holdout = record("INV-H", offers=())
    log.record(holdout)
    assert log.offers_of(holdout.decision_id) == frozenset()


def test_declines_count_only_in_the_customers_last_invoices(log: DecisionLog) -> None:
    decisions = [
        record(f"INV-{day}", day=day, offers=("PLAN_30GB", f"ADDON_{day}")) for day in (1, 2, 3, 4)
    ]
    for decision in decisions:
        log.record(decision)
    log.record_event(event(decisions[0], "ADDON_1", "decline"))  # four invoices ago
    log.record_event(event(decisions[2], "ADDON_3", "decline"))
    log.record_event(event(decisions[3], "PLAN_30GB", "decline"))
    log.record_event(event(decisions[3], "ADDON_4", "click"))  # not a decline
    other = record("INV-OTHER", customer_id="C2", offers=("ADDON_9",))
    log.record(other)
    log.record_event(event(other, "ADDON_9", "decline"))  # another customer
    assert log.recent_declines("C1", 3) == {"ADDON_3", "PLAN_30GB"}
    assert log.recent_declines("C1", 4) == {"ADDON_1", "ADDON_3", "PLAN_30GB"}
    assert log.recent_declines("C1", 1) == {"PLAN_30GB"}
    assert log.recent_declines("C1", 0) == frozenset()
    assert log.recent_declines("C3", 3) == frozenset()


def test_declines_read_for_many_invoices_at_once_are_each_invoices_own(log: DecisionLog) -> None:
    decisions = [
        record(f"INV-{day}", day=day, offers=("PLAN_30GB", f"ADDON_{day}")) for day in (1, 2, 3, 4)
    ]
    for decision in decisions:
        log.record(decision)
    log.record_event(event(decisions[0], "ADDON_1", "decline"))
    log.record_event(event(decisions[2], "ADDON_3", "decline"))
    log.record_event(event(decisions[3], "PLAN_30GB", "decline"))
    log.record_event(event(decisions[3], "ADDON_4", "click"))
    other = record("INV-OTHER", customer_id="C2", offers=("ADDON_9",))
    log.record(other)
    log.record_event(event(other, "ADDON_9", "decline"))
    # A fifth invoice of C1, C1's fourth decided again (its own decision is not before it), C2's
    # and a customer the log has never seen, in one read.
    pairs = [("C1", "INV-5"), ("C1", "INV-4"), ("C2", "INV-X"), ("C3", "INV-Y")]
    for cap in (0, 1, 3, 4):
        many = log.recent_declines_many(pairs, cap)
        assert many == {
            pair: log.recent_declines(pair[0], cap, deciding=pair[1]) for pair in pairs
        }, cap
    assert log.recent_declines_many(pairs, 3)[("C1", "INV-5")] == {"ADDON_3", "PLAN_30GB"}
    assert log.recent_declines_many(pairs, 3)[("C1", "INV-4")] == {"ADDON_1", "ADDON_3"}
    assert log.recent_declines_many(pairs, 3)[("C2", "INV-X")] == {"ADDON_9"}
    assert log.recent_declines_many([], 3) == {}


def test_declines_of_decisions_made_at_the_same_instant_count_once_each(
    log: DecisionLog,
) -> None:
    # Three invoices decided at the same instant, each with two declines, after two older ones:
    # the last three invoices are exactly the three tied ones, whatever order the log reads them.
    older = [record(f"OLD-{day}", day=day, offers=(f"OLD_{day}",)) for day in (1, 2)]
    tied = [record(f"TIED-{n}", day=5, offers=(f"A_{n}", f"B_{n}")) for n in range(3)]
    for decision in (*older, *tied):
        log.record(decision)
        for offer in (offer.offer_id for offer in decision.offers):
            log.record_event(event(decision, offer, "decline"))
    expected = {f"{kind}_{n}" for kind in ("A", "B") for n in range(3)}
    pairs = [("C1", "NEW-1"), ("C1", "NEW-2"), ("C2", "NEW-3")]
    many = log.recent_declines_many(pairs, 3)
    assert many[("C1", "NEW-1")] == expected
    assert many[("C1", "NEW-2")] == expected
    assert log.recent_declines("C1", 3) == expected
    # One invoice more reaches the newer of the two older ones.
    assert log.recent_declines_many(pairs, 4)[("C1", "NEW-1")] == expected | {"OLD_2"}


def test_an_event_is_stored_once(log: DecisionLog) -> None:
    decision = record("INV-1")
    log.record(decision)
    first = event(decision, "PLAN_30GB", "accept")
    stored, created = log.record_event(first)
    assert created and stored == first
    again, created_again = log.record_event(
        EventRecord(first.event_id, decision.decision_id, "PLAN_30GB", "decline", T0, T0)
    )
    assert not created_again and again.type == "accept"
    found = log.find_event(first.event_id)
    assert found is not None and found.occurred_at == first.occurred_at
    assert found.occurred_at.tzinfo is not None


def _write_existing(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=OFFER_EVENTS.arrow_schema()), path)


def test_export_appends_outcomes_in_the_contract_schema(log: DecisionLog, tmp_path: Path) -> None:
    first = record("INV-1", offers=("PLAN_30GB", "ADDON_DATA_10GB", "PAY_AUTOGIRO", "PLAN_5GB"))
    second = record("INV-2", customer_id="C2", offers=("LOYALTY_NEW_PRICE",), day=29)
    for decision in (first, second):
        log.record(decision)
    log.record_event(event(first, "PLAN_30GB", "impression", 1))
    log.record_event(event(first, "PLAN_30GB", "click", 2))
    log.record_event(event(first, "PLAN_30GB", "accept", 3))
    log.record_event(event(first, "PLAN_30GB", "accept", 9))  # the first accept counts
    log.record_event(event(first, "ADDON_DATA_10GB", "click", 4))
    log.record_event(event(first, "PAY_AUTOGIRO", "decline", 5))
    log.record_event(event(first, "PLAN_5GB", "impression", 6))

    out = tmp_path / "raw" / "offer_events.parquet"
    earlier = {
        "decision_id": "SIM-0001",
        "invoice_id": "SIM-INV-1",
        "customer_id": "C7",
        "offer_id": "PLAN_15GB",
        "shown_at": T0 - dt.timedelta(days=60),
        "rank": 1,
        "policy": "rules",
        "propensity": None,
        "outcome": "accepted",
        "outcome_at": T0 - dt.timedelta(days=59),
    }
    stale = {
        **earlier,
        "decision_id": second.decision_id,
        "invoice_id": "INV-2",
        "offer_id": "LOYALTY_NEW_PRICE",
        "outcome": "clicked",
    }
    _write_existing(out, [earlier, stale])
    log.record_event(event(second, "LOYALTY_NEW_PRICE", "decline", 7))

    assert merge_into_offer_events(log, out, LATER).exported == 5
    assert schema_problems(out.parent, OFFER_EVENTS) == []
    frame = read_table(out.parent, OFFER_EVENTS)  # raises on a null where none is allowed
    assert len(frame) == 6  # the earlier row kept, the stale one replaced
    outcomes: dict[tuple[str, str], tuple[str, Any]] = {
        (str(row.decision_id), str(row.offer_id)): (str(row.outcome), row.outcome_at)
        for row in frame.itertuples()
    }
    assert set(frame["outcome"]) <= set(OUTCOMES)
    assert outcomes[(first.decision_id, "PLAN_30GB")] == ("accepted", T0 + dt.timedelta(minutes=3))
    assert outcomes[(first.decision_id, "ADDON_DATA_10GB")][0] == "clicked"
    assert outcomes[(first.decision_id, "PAY_AUTOGIRO")][0] == "declined"
    ignored, ignored_at = outcomes[(first.decision_id, "PLAN_5GB")]
    assert ignored == "ignored" and pd.isna(ignored_at)
    assert outcomes[(second.decision_id, "LOYALTY_NEW_PRICE")][0] == "declined"
    assert outcomes[("SIM-0001", "PLAN_15GB")][0] == "accepted"
    shown = frame[
        (frame["decision_id"] == first.decision_id) & (frame["offer_id"] == "PAY_AUTOGIRO")
    ]
    assert shown[["rank", "policy", "propensity"]].to_dict("records") == [
        {"rank": 3, "policy": "model", "propensity": 1.0}
    ]

    assert merge_into_offer_events(log, out, LATER) == (5, 0)  # again: nothing doubled
    assert pq.read_table(out).num_rows == 6


def test_an_outcome_stamped_before_its_decision_is_exported_at_the_decisions_time(
    log: DecisionLog, tmp_path: Path
) -> None:
    decision = record("INV-1")
    log.record(decision)
    # Within the API's clock skew, or stored before the API refused earlier moments.
    log.record_event(event(decision, "PLAN_30GB", "accept", -4))
    log.record_event(event(decision, "ADDON_DATA_10GB", "decline", -60 * 24 * 365))
    out = tmp_path / "raw" / "offer_events.parquet"
    assert merge_into_offer_events(log, out, LATER) == (2, 0)
    assert schema_problems(out.parent, OFFER_EVENTS) == []
    frame = read_table(out.parent, OFFER_EVENTS)
    assert sorted(zip(frame["outcome"], frame["outcome_at"], strict=True)) == [
        ("accepted", decision.created_at),
        ("declined", decision.created_at),
    ]


def test_a_decision_is_exported_once_its_outcomes_are_known(
    log: DecisionLog, tmp_path: Path
) -> None:
    decision = record("INV-1", offers=("PLAN_30GB", "ADDON_DATA_10GB", "PAY_AUTOGIRO"))
    older = record("INV-0", customer_id="C2", offers=("PLAN_5GB",), day=1)
    for made in (decision, older):
        log.record(made)
    log.record_event(event(decision, "PLAN_30GB", "accept", 60))
    log.record_event(event(decision, "PAY_AUTOGIRO", "decline", 90))
    out = tmp_path / "raw" / "offer_events.parquet"
    # A day after: the others may still be accepted within 14 days, so the decision waits whole
    # (its accepted offer too: the newest days must not hold accepted offers alone).
    assert merge_into_offer_events(log, out, T0 + dt.timedelta(days=1)) == (1, 3)
    assert read_table(out.parent, OFFER_EVENTS)["invoice_id"].tolist() == ["INV-0"]
    # The window is still open a moment before its end, and closed at it.
    window = dt.timedelta(days=14)
    assert merge_into_offer_events(log, out, T0 + window - dt.timedelta(seconds=1)) == (1, 3)
    assert merge_into_offer_events(log, out, T0 + window) == (4, 0)
    exported = read_table(out.parent, OFFER_EVENTS)
    assert sorted(zip(exported["offer_id"], exported["outcome"], strict=True)) == [
        ("ADDON_DATA_10GB", "ignored"),
        ("PAY_AUTOGIRO", "declined"),
        ("PLAN_30GB", "accepted"),
        ("PLAN_5GB", "ignored"),
    ]


def test_nothing_to_export_writes_no_file(log: DecisionLog, tmp_path: Path) -> None:
    log.record(record("INV-1"))
    out = tmp_path / "raw" / "offer_events.parquet"
    assert merge_into_offer_events(log, out, T0) == (0, 2)
    assert not out.exists()  # a world's folder is not started by an empty export


def test_monitoring_reads_only_the_decisions_a_model_scored(log: DecisionLog) -> None:
    from serving.decision_log.monitoring import monitored_period

    inputs = {"data_gb_avg_3m": 9.0, "age_band": "30-44"}
    for number in range(5):  # decided by rules: no inputs, the newest of the period
        log.record(replace(record(f"INV-R{number}", customer_id=f"R{number}"), model_inputs=None))
    scored = replace(record("INV-M", customer_id="M1", day=29), model_inputs=inputs)
    log.record(scored)
    period = monitored_period(log, T0 - dt.timedelta(days=5), T0 + dt.timedelta(days=1), limit=2)
    assert period.decisions_with_inputs == 1
    assert period.inputs == [inputs]  # the rules' decisions do not fill the limit of 2
    assert period.answers == 6


def test_monitoring_reads_a_period_from_indexes_never_from_the_decisions_rows(
    tmp_path: Path,
) -> None:
    """The drift gauges read the whole monitoring window in every worker every few minutes: a
    read of the decisions' rows (kilobytes of answer and log each) costs seconds of CPU at a
    quarter of a million decisions. Every read of the period is planned on an index."""
    from serving.decision_log.monitoring import monitored_period

    log = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}")
    scored = replace(
        record("INV-M", customer_id="M1"),
        model_version="offer-ranker/3",
        model_inputs={"data_gb_avg_3m": 9.0},
        offers=(LoggedOffer("PLAN_30GB", 1, 1.0, 12.5, acceptance=0.31),),
    )
    log.record(scored)
    log.record_event(event(scored, "PLAN_30GB", "accept"))
    statements: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    sa.event.listen(log.engine, "before_cursor_execute", keep)
    period = monitored_period(
        log, T0 - dt.timedelta(days=5), T0 + dt.timedelta(days=5), 10, "offer-ranker/3"
    )
    sa.event.remove(log.engine, "before_cursor_execute", keep)
    assert (period.answers, period.decisions_with_inputs, period.inputs) == (
        1,
        1,
        [{"data_gb_avg_3m": 9.0}],
    )
    assert [(o.offers, o.predicted_sum, o.accepted) for o in period.outcomes] == [(1, 0.31, 1)]
    plans: dict[str, list[Any]] = {}
    with log.engine.connect() as connection:
        for statement, parameters in statements:
            if "decisions" in statement:
                found = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plans[statement] = [row[-1] for row in found]
    log.close()
    reads = [step for plan in plans.values() for step in plan]
    assert "SEARCH superseded_decisions USING COVERING INDEX" in " ".join(reads), reads
    on_decisions = [step for step in reads if " decisions " in f"{step} "]
    assert on_decisions and not [step for step in on_decisions if step.startswith("SCAN")]
    assert all(
        "COVERING INDEX ix_decisions_period" in step or "INDEX ix_decisions_model_inputs" in step
        for step in on_decisions
    ), on_decisions
    assert any("ix_decision_offers_first" in step for step in reads), reads


def test_the_logs_json_reader_reads_what_the_standard_library_reads() -> None:
    """The log's JSON columns are read by pydantic's reader (faster): the values must be the
    standard library's, for what the log holds and for what other writers may have stored."""
    import json

    from serving.decision_log.database import loads_json

    written = [
        '{"data_gb_avg_3m": 9.000000000000002, "age_band": "45-64", "tenure_months": 7}',
        '{"reasons": ["Du använde 12,5 GB – mer än planen"], "nested": {"a": [1, 2.5e-07, null]}}',
        '{"big": 123456789012345678901234567890, "negative": -0.0, "small": 5e-324}',
        '{"missing": NaN, "unbounded": Infinity, "same": 1, "same": 2}',
        "null",
        # An earlier release wrote with the standard library, which escapes a lone surrogate;
        # pydantic's reader refuses it, and the standard library's then reads it.
        '{"name": "\\ud800 alone"}',
        "[" * 300 + "]" * 300,
    ]
    for text in written:
        read, expected = loads_json(text), json.loads(text)
        assert json.dumps(read) == json.dumps(expected), text[:40]
    with pytest.raises(ValueError):
        loads_json('{"cut": ')


def test_the_log_reads_its_json_columns_with_the_logs_reader(log: DecisionLog) -> None:
    from serving.decision_log.database import loads_json

    assert log.engine.dialect._json_deserializer is loads_json  # type: ignore[attr-defined]


def test_a_failed_export_leaves_the_file_as_it_was(
    log: DecisionLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.record(record("INV-1"))
    out = tmp_path / "offer_events.parquet"
    merge_into_offer_events(log, out, LATER)
    before = out.read_bytes()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    log.record(record("INV-2"))
    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        merge_into_offer_events(log, out, LATER)
    assert out.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


def test_the_api_logs_to_postgresql_by_configuration(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    # The schema through the connection's search_path: configuration alone, as OFFERS_DATABASE_URL.
    url = f"{postgres_url}?options=-csearch_path%3D{pg_schema}"
    renderer = auth("renderer")
    with running(make_app(tmp_path, database_url=url)) as client:
        first = client.post("/v1/offers", json=offers_body(), headers=renderer)
        again = client.post("/v1/offers", json=offers_body(max_offers=1), headers=renderer)
        decision = first.json()
        accepted = client.post(
            "/v1/events",
            json={
                "event_id": "EV-PG-1",
                "decision_id": decision["decision_id"],
                "offer_id": decision["offers"][0]["offer_id"],
                "type": "accept",
                "occurred_at": just_now(),
            },
            headers=renderer,
        )
    assert first.status_code == 200 and again.content == first.content
    assert accepted.status_code == 202
    engine = create_log_engine(postgres_url)
    with engine.connect() as connection:
        count = connection.execute(sa.text(f'SELECT count(*) FROM "{pg_schema}".decisions'))
        assert count.scalar_one() == 1
    engine.dispose()


def test_a_degraded_answer_logged_on_postgresql_is_decided_afresh_after_recovery(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    url = f"{postgres_url}?options=-csearch_path%3D{pg_schema}"
    renderer = auth("renderer")
    features = FakeFeatures()
    features.fail = "timeout"
    with running(make_app(tmp_path, database_url=url, features=features)) as client:
        down = client.post("/v1/offers", json=offers_body(), headers=renderer).json()
        features.fail = None
        back = client.post("/v1/offers", json=offers_body(), headers=renderer)
        again = client.post("/v1/offers", json=offers_body(max_offers=1), headers=renderer)
    assert (down["degraded"], down["offers"]) == ("feature_store_unavailable", [])
    assert back.json()["degraded"] is None and back.json()["offers"]
    assert again.content == back.content
    engine = create_log_engine(postgres_url)
    with engine.connect() as connection:
        live = connection.execute(sa.text(f'SELECT decision_id FROM "{pg_schema}".decisions'))
        assert live.scalars().all() == [back.json()["decision_id"]]
        audit = connection.execute(
            sa.text(f'SELECT decision_id, superseded_by FROM "{pg_schema}".superseded_decisions')
        )
        assert audit.all() == [(down["decision_id"], back.json()["decision_id"])]
    engine.dispose()


def test_offers_events_export_appends_to_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from core.settings import get_settings
    from pipelines.cli import app as cli

    url = f"sqlite:///{tmp_path / 'offers.db'}"
    log = DecisionLog(url)
    decision = record("INV-CLI", offers=("PLAN_30GB",), day=1)  # its outcome window is over
    log.record(decision)
    log.record_event(event(decision, "PLAN_30GB", "accept"))
    log.close()
    monkeypatch.setenv("OFFERS_DATABASE_URL", url)
    monkeypatch.setenv("OFFERS_DATA_DIR", str(tmp_path / "raw"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["events", "export"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "1 offer events exported" in result.output
    exported = read_table(tmp_path / "raw", OFFER_EVENTS)
    assert exported[["invoice_id", "offer_id", "outcome"]].to_dict("records") == [
        {"invoice_id": "INV-CLI", "offer_id": "PLAN_30GB", "outcome": "accepted"}
    ]


def test_rows_written_on_the_request_path_read_back_as_sqlalchemy_writes_them(
    log: DecisionLog,
) -> None:
    written = record("INV-1")
    log.record(written)
    decisions = log.tables.decisions
    with log.engine.connect() as connection:
        row = connection.execute(sa.select(decisions)).one()._mapping
        offers = connection.execute(sa.select(log.tables.decision_offers).order_by("rank")).all()
    assert row["created_at"] == written.created_at and row["created_at"].tzinfo == dt.UTC
    assert row["invoice_date"] == written.invoice_date
    assert row["consent"] == {"marketing": True, "profiling": True}
    assert row["log"] == {"churn_risk": 0.12}
    assert row["response"] == written.response_json
    assert [(o.offer_id, o.rank, o.propensity, o.score) for o in offers] == [
        ("PLAN_30GB", 1, 1.0, 10.0),
        ("ADDON_DATA_10GB", 2, 1.0, 20.0),
    ]


def test_a_sqlite_log_checkpoints_in_the_background_not_in_commits(tmp_path: Path) -> None:
    path = tmp_path / "offers.db"
    log = DecisionLog(f"sqlite:///{path}")
    with log.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
    for number in range(40):
        log.record(record(f"INV-{number}"))
    wal = path.with_name("offers.db-wal")
    assert wal.stat().st_size > 0
    checkpointer = log.checkpointer
    assert checkpointer is not None
    # Within a few background rounds every committed page is copied into the database file.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        last = checkpointer.last
        if last is not None and last[0] == 0 and last[1] > 0 and last[1] == last[2]:
            break
        time.sleep(0.1)
    assert last is not None and last[1] == last[2] > 0
    log.close()
    # Closing empties the WAL; the decisions are all in the database file.
    assert not wal.exists() or wal.stat().st_size == 0
    reopened = DecisionLog(f"sqlite:///{path}")
    assert all(reopened.find(f"INV-{number}") is not None for number in range(40))
    reopened.close()


def test_a_postgresql_server_that_never_answers_fails_within_the_connect_timeout() -> None:
    """A listening port that never speaks PostgreSQL (a black-holed server): the connection
    fails after the connect timeout instead of waiting on the operating system for minutes."""
    import socket
    import time

    from serving.decision_log.database import POSTGRES_CONNECT_TIMEOUT_SECONDS, create_log_engine

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts at the TCP level, never answers
    port = silent.getsockname()[1]
    engine = create_log_engine(f"postgresql://offers@127.0.0.1:{port}/test")
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError, match="timeout"), engine.connect():
            pass
    finally:
        silent.close()
        engine.dispose()
    assert time.monotonic() - started < POSTGRES_CONNECT_TIMEOUT_SECONDS + 5


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_postgresql_sessions_get_a_statement_timeout_and_keep_the_url_options(
    postgres_url: str, pg_schema: str, scheme: str
) -> None:
    """Every way users write a PostgreSQL URL, psycopg2's included, connects with psycopg 3."""
    from serving.decision_log.database import create_log_engine

    url = f"{scheme}://{postgres_url.split('://', 1)[1]}"
    engine = create_log_engine(f"{url}?options=-csearch_path%3D{pg_schema}")
    assert engine.dialect.driver == "psycopg"
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar_one() == "10s"
            assert connection.exec_driver_sql("SHOW search_path").scalar_one() == pg_schema
    finally:
        engine.dispose()


def test_a_log_from_before_input_monitoring_gains_its_columns_and_keeps_its_rows(
    log: DecisionLog,
) -> None:
    old = record("INV-OLD")
    log.record(old)
    # Make the log as an earlier release left it: without the columns and index added since.
    schema = log.tables.metadata.schema
    prefix = f'"{schema}".' if schema else ""
    with log.engine.begin() as connection:
        for index in REPLACING_INDEXES:
            connection.exec_driver_sql(f"DROP INDEX {prefix}{index}")
        # The index monitoring read through before this release's covering ones.
        connection.exec_driver_sql(
            f"CREATE INDEX ix_decisions_created_at ON {prefix}decisions (created_at)"
        )
        for table, column in (
            ("decisions", "model_inputs"),
            ("superseded_decisions", "model_inputs"),
            ("decision_offers", "acceptance"),
        ):
            connection.exec_driver_sql(f"ALTER TABLE {prefix}{table} DROP COLUMN {column}")
    log.close()

    reopened = DecisionLog(log.url, schema=schema)
    try:
        inspector = sa.inspect(reopened.engine)
        assert "model_inputs" in {c["name"] for c in inspector.get_columns("decisions", schema)}
        assert "acceptance" in {c["name"] for c in inspector.get_columns("decision_offers", schema)}
        indexes = {
            index["name"]
            for table in ("decisions", "decision_offers", "superseded_decisions")
            for index in inspector.get_indexes(table, schema)
        }
        assert indexes >= set(REPLACING_INDEXES)
        assert "ix_decisions_created_at" not in indexes  # replaced: no insert pays for it
        kept = reopened.find("INV-OLD")
        assert kept is not None and kept.decision_id == old.decision_id
        new = replace(
            record("INV-NEW"),
            model_inputs={"data_gb_m1": 9.0, "age_band": "45-64"},
            offers=(LoggedOffer("PLAN_30GB", 1, 1.0, 12.5, acceptance=0.31),),
        )
        reopened.record(new)
        decisions, offers = reopened.tables.decisions, reopened.tables.decision_offers
        with reopened.engine.connect() as connection:
            inputs = dict(
                connection.execute(sa.select(decisions.c.invoice_id, decisions.c.model_inputs))
                .tuples()
                .all()
            )
            acceptance = dict(
                connection.execute(sa.select(offers.c.decision_id, offers.c.acceptance))
                .tuples()
                .all()
            )
        assert inputs == {"INV-OLD": None, "INV-NEW": {"data_gb_m1": 9.0, "age_band": "45-64"}}
        assert acceptance[new.decision_id] == 0.31
        assert acceptance[old.decision_id] is None
    finally:
        reopened.close()
