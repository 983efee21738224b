"""Erasing one customer from the decision log (GDPR Art. 17): their decisions, the offers those
showed, the events back, superseded decisions and consent answers, in one transaction; what was
removed is kept as counts in ``erasures``, without the customer's id."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from core.columns import CUSTOMER_KEY
from serving.decision_log.repository import DecisionLog

# Decision ids per DELETE … IN (…): well under SQLite's 32,766 bound parameters.
IDS_PER_STATEMENT = 500


@dataclass(frozen=True)
class LogErasure:
    """How many rows of each kind were removed."""

    decisions: int
    offers_shown: int
    events: int
    superseded_decisions: int
    consent_changes: int

    @property
    def total(self) -> int:
        return sum(asdict(self).values())


def erase_customer(log: DecisionLog, customer_id: str, online_values: int = 0) -> LogErasure:
    """Remove every row of ``customer_id`` from the log and record the counts (with
    ``online_values``, what the online store held) in ``erasures``."""
    tables = log.tables
    with log.engine.begin() as connection:
        decision_ids = [
            str(row[0])
            for table in (tables.decisions, tables.superseded_decisions)
            for row in connection.execute(
                sa.select(table.c.decision_id).where(table.c[CUSTOMER_KEY] == customer_id)
            )
        ]
        events = offers = 0
        for start in range(0, len(decision_ids), IDS_PER_STATEMENT):
            part = decision_ids[start : start + IDS_PER_STATEMENT]
            events += connection.execute(
                tables.events.delete().where(tables.events.c.decision_id.in_(part))
            ).rowcount
            offers += connection.execute(
                tables.decision_offers.delete().where(
                    tables.decision_offers.c.decision_id.in_(part)
                )
            ).rowcount
        erased = LogErasure(
            decisions=connection.execute(
                tables.decisions.delete().where(tables.decisions.c[CUSTOMER_KEY] == customer_id)
            ).rowcount,
            offers_shown=offers,
            events=events,
            superseded_decisions=connection.execute(
                tables.superseded_decisions.delete().where(
                    tables.superseded_decisions.c[CUSTOMER_KEY] == customer_id
                )
            ).rowcount,
            consent_changes=connection.execute(
                tables.consent_changes.delete().where(
                    tables.consent_changes.c[CUSTOMER_KEY] == customer_id
                )
            ).rowcount,
        )
        connection.execute(
            tables.erasures.insert().values(
                erasure_id=str(uuid.uuid4()),
                erased_at=dt.datetime.now(dt.UTC),
                online_values=online_values,
                **asdict(erased),
            )
        )
    return erased
