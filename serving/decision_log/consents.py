"""Consent changes in the decision log's database: stored before they reach the online store.

``POST /v1/consents`` stores one change and pushes it; ``offers consents sync`` stores a file's
changes in bulk and pushes every change the consents table has not overtaken. ``applied_at`` says
when a change was last written to the online store; a change never written keeps it null.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.columns import CUSTOMER_KEY
from serving.decision_log.records import ConsentChangeRecord
from serving.decision_log.repository import DecisionLog

IDS_PER_STATEMENT = 500
CHANGE_COLUMNS = (
    "change_id",
    CUSTOMER_KEY,
    "purpose",
    "granted",
    "updated_at",
    "received_at",
    "applied_at",
)


def _row(change: ConsentChangeRecord) -> dict[str, Any]:
    return {
        "change_id": change.change_id,
        CUSTOMER_KEY: change.customer_id,
        "purpose": change.purpose,
        "granted": change.granted,
        "updated_at": change.updated_at,
        "received_at": change.received_at,
        "applied_at": change.applied_at,
    }


def _record(row: Any) -> ConsentChangeRecord:
    values = row._mapping
    return ConsentChangeRecord(
        change_id=values["change_id"],
        customer_id=values[CUSTOMER_KEY],
        purpose=values["purpose"],
        granted=bool(values["granted"]),
        updated_at=values["updated_at"],
        received_at=values["received_at"],
        applied_at=values["applied_at"],
    )


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), IDS_PER_STATEMENT):
        yield items[start : start + IDS_PER_STATEMENT]


def find_consent_change(log: DecisionLog, change_id: str) -> ConsentChangeRecord | None:
    table = log.tables.consent_changes
    with log.engine.connect() as connection:
        row = connection.execute(sa.select(table).where(table.c.change_id == change_id)).first()
    return None if row is None else _record(row)


def record_consent_change(
    log: DecisionLog, change: ConsentChangeRecord
) -> tuple[ConsentChangeRecord, bool]:
    """Store a change durably; when its change_id is stored already, return that one instead."""
    try:
        with log.engine.begin() as connection:
            connection.execute(log.tables.consent_changes.insert(), _row(change))
    except IntegrityError:
        stored = find_consent_change(log, change.change_id)
        if stored is None:
            raise
        return stored, False
    return change, True


def consent_changes_of(log: DecisionLog, customer_id: str) -> list[ConsentChangeRecord]:
    """Every stored change of one customer, oldest first."""
    table = log.tables.consent_changes
    query = (
        sa.select(table)
        .where(table.c[CUSTOMER_KEY] == customer_id)
        .order_by(table.c.updated_at, table.c.received_at, table.c.change_id)
    )
    with log.engine.connect() as connection:
        return [_record(row) for row in connection.execute(query)]


def mark_consent_changes_applied(
    log: DecisionLog, change_ids: Sequence[str], applied_at: dt.datetime
) -> None:
    """Note that these changes are now in the online store."""
    table = log.tables.consent_changes
    ids = list(dict.fromkeys(change_ids))
    with log.engine.begin() as connection:
        for part in _chunks(ids):
            connection.execute(
                table.update()
                .where(table.c.change_id.in_(list(part)))
                .values(applied_at=applied_at)
            )


def record_consent_changes(log: DecisionLog, changes: Sequence[ConsentChangeRecord]) -> int:
    """Store many changes in one transaction, leaving out change_ids already stored; returns
    how many were new."""
    table = log.tables.consent_changes
    unique = list({change.change_id: change for change in changes}.values())
    with log.engine.begin() as connection:
        stored: set[str] = set()
        for part in _chunks([change.change_id for change in unique]):
            query = sa.select(table.c.change_id).where(table.c.change_id.in_(list(part)))
            stored.update(connection.execute(query).scalars())
        new = [_row(change) for change in unique if change.change_id not in stored]
        if new:
            connection.execute(table.insert(), new)
    return len(new)


def stored_consent_changes(log: DecisionLog) -> pd.DataFrame:
    """Every stored change, one row each, with ``CHANGE_COLUMNS`` (times as UTC)."""
    table = log.tables.consent_changes
    with log.engine.connect() as connection:
        rows = connection.execute(sa.select(*(table.c[name] for name in CHANGE_COLUMNS))).all()
    frame = pd.DataFrame([tuple(row) for row in rows], columns=list(CHANGE_COLUMNS))
    for name in ("updated_at", "received_at", "applied_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    frame["granted"] = frame["granted"].astype(bool)
    return frame
