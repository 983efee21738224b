"""Consent changes in the decision log, on SQLite and PostgreSQL: stored once, read back as UTC,
looked up per customer, marked applied, recorded in bulk."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from serving.decision_log import DecisionLog
from serving.decision_log.consents import (
    consent_changes_of,
    find_consent_change,
    mark_consent_changes_applied,
    record_consent_change,
    record_consent_changes,
    stored_consent_changes,
)
from serving.decision_log.records import ConsentChangeRecord

AT = dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)


def change(change_id: str, **overrides: object) -> ConsentChangeRecord:
    values: dict[str, object] = {
        "change_id": change_id,
        "customer_id": "C1",
        "purpose": "marketing",
        "granted": False,
        "updated_at": AT,
        "received_at": AT + dt.timedelta(seconds=1),
    }
    values.update(overrides)
    return ConsentChangeRecord(**values)  # type: ignore[arg-type]


def test_a_change_is_stored_once_and_read_back_as_utc(log: DecisionLog) -> None:
    first = change("CC-1", updated_at=AT.astimezone(dt.timezone(dt.timedelta(hours=1))))
    stored, created = record_consent_change(log, first)
    assert created and stored == first
    again, created_again = record_consent_change(log, change("CC-1", granted=True))
    assert not created_again
    assert again.granted is False and again.updated_at == AT and again.updated_at.tzinfo == dt.UTC
    assert again.same_answer(first) and not again.same_answer(change("CC-1", granted=True))
    assert again.applied_at is None
    assert find_consent_change(log, "CC-NONE") is None


def test_a_customer_s_changes_come_oldest_first_and_are_marked_applied(log: DecisionLog) -> None:
    record_consent_change(log, change("CC-B", updated_at=AT + dt.timedelta(hours=1)))
    record_consent_change(log, change("CC-A"))
    record_consent_change(log, change("CC-OTHER", customer_id="C2"))
    assert [c.change_id for c in consent_changes_of(log, "C1")] == ["CC-A", "CC-B"]
    mark_consent_changes_applied(log, ["CC-A", "CC-B"], AT + dt.timedelta(days=1))
    stored = find_consent_change(log, "CC-B")
    assert stored is not None and stored.applied_at == AT + dt.timedelta(days=1)
    other = find_consent_change(log, "CC-OTHER")
    assert other is not None and other.applied_at is None


def test_changes_recorded_in_bulk_leave_out_those_stored_before(log: DecisionLog) -> None:
    record_consent_change(log, change("CC-1"))
    batch = [change("CC-1"), change("CC-2", purpose="profiling"), change("CC-2"), change("CC-3")]
    assert record_consent_changes(log, batch) == 2
    assert record_consent_changes(log, batch) == 0
    frame = stored_consent_changes(log)
    assert sorted(frame["change_id"]) == ["CC-1", "CC-2", "CC-3"]
    assert str(frame["updated_at"].dt.tz) == "UTC" and frame["granted"].dtype == bool
    assert frame["applied_at"].isna().all()


def test_the_customer_index_exists(log: DecisionLog) -> None:
    inspector = sa.inspect(log.engine)
    schema = log.tables.metadata.schema
    indexes = {
        index["name"]: index["column_names"]
        for index in inspector.get_indexes("consent_changes", schema=schema)
    }
    assert indexes["ix_consent_changes_customer"] == ["customer_id", "purpose", "updated_at"]
