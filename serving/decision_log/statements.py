"""The request path's statements on the decision log, built once per log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.columns import CUSTOMER_KEY
from serving.decision_log.schema import LogTables


@dataclass(frozen=True)
class Statements:
    """The request path's statements, built once: per call only their parameters change, which
    saves SQLAlchemy rebuilding each construct (about a tenth of a millisecond a query)."""

    find: sa.Select[Any]
    recent_declines: sa.Select[Any]
    offers_of: sa.Select[Any]
    find_event: sa.Select[Any]
    insert_decision: sa.Insert
    insert_offers: sa.Insert
    insert_event: sa.Insert


def build_statements(tables: LogTables) -> Statements:
    """The look-ups and inserts of the request path on ``tables``."""
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    # The customer's latest decisions, one per invoice, and the offers declined in them.
    latest = (
        sa.select(decisions.c.decision_id, decisions.c.invoice_date, decisions.c.created_at)
        .where(decisions.c.customer_id == sa.bindparam(CUSTOMER_KEY))
        .order_by(decisions.c.invoice_date.desc(), decisions.c.created_at.desc())
        .limit(sa.bindparam("invoices", type_=sa.Integer))
        .subquery("latest")
    )
    declined = sa.and_(events.c.decision_id == latest.c.decision_id, events.c.type == "decline")
    return Statements(
        find=sa.select(
            decisions.c.decision_id, decisions.c.customer_id, decisions.c.response
        ).where(decisions.c.invoice_id == sa.bindparam("invoice_id")),
        recent_declines=sa.select(latest.c.decision_id, events.c.offer_id)
        .select_from(latest.outerjoin(events, declined))
        .order_by(latest.c.invoice_date.desc(), latest.c.created_at.desc()),
        offers_of=sa.select(decisions.c.decision_id, offers.c.offer_id)
        .select_from(decisions.outerjoin(offers, offers.c.decision_id == decisions.c.decision_id))
        .where(decisions.c.decision_id == sa.bindparam("decision_id")),
        find_event=sa.select(events).where(events.c.event_id == sa.bindparam("event_id")),
        insert_decision=decisions.insert(),
        insert_offers=offers.insert(),
        insert_event=events.insert(),
    )
