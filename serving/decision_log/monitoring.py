"""What model monitoring reads from the decision log for one period: the answers and how many
were degraded, the customer inputs of the newest model decisions, and the first-placed offers
the model scored with whether each was accepted.

Every read is bounded: at most ``limit`` of the newest decisions of the period, through the
index on ``created_at``. Nothing that names a customer or an invoice leaves this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from serving.decision_log.repository import DecisionLog

ACCEPT = "accept"


@dataclass(frozen=True)
class FirstOffer:
    """An offer the model placed first: when it was decided, the predicted acceptance, and
    whether an accept event came back for it."""

    decided_at: dt.datetime
    predicted: float
    accepted: bool


@dataclass(frozen=True)
class MonitoredPeriod:
    """The decision log's figures for one period."""

    since: dt.datetime
    until: dt.datetime
    answers: int
    degraded: int
    inputs: list[Mapping[str, Any]]
    first_offers: list[FirstOffer]


def monitored_period(
    log: DecisionLog, since: dt.datetime, until: dt.datetime, limit: int
) -> MonitoredPeriod:
    """The period's answers (live and superseded decisions: each was answered), the inputs of
    its newest ``limit`` model decisions and their first-placed offers."""
    tables = log.tables
    decisions, superseded = tables.decisions, tables.superseded_decisions
    offers, events = tables.decision_offers, tables.events

    def counts(table: sa.Table) -> Any:
        return sa.select(sa.func.count(), sa.func.count(table.c.degraded)).where(
            table.c.created_at >= since, table.c.created_at < until
        )

    newest = (
        sa.select(decisions.c.decision_id, decisions.c.created_at, decisions.c.model_inputs)
        .where(
            decisions.c.created_at >= since,
            decisions.c.created_at < until,
            decisions.c.model_inputs.is_not(None),
        )
        .order_by(decisions.c.created_at.desc())
        .limit(limit)
        .subquery("newest")
    )
    accepted = (
        sa.select(sa.literal(1))
        .where(
            events.c.decision_id == offers.c.decision_id,
            events.c.offer_id == offers.c.offer_id,
            events.c.type == ACCEPT,
        )
        .exists()
    )
    first = (
        sa.select(newest.c.created_at, offers.c.acceptance, accepted.label("accepted"))
        .select_from(newest.join(offers, offers.c.decision_id == newest.c.decision_id))
        .where(offers.c.rank == 1, offers.c.acceptance.is_not(None))
    )
    with log.engine.connect() as connection:
        live = connection.execute(counts(decisions)).one()
        replaced = connection.execute(counts(superseded)).one()
        inputs = [row.model_inputs for row in connection.execute(sa.select(newest.c.model_inputs))]
        first_offers = [
            FirstOffer(row.created_at, float(row.acceptance), bool(row.accepted))
            for row in connection.execute(first)
        ]
    return MonitoredPeriod(
        since=since,
        until=until,
        answers=int(live[0]) + int(replaced[0]),
        degraded=int(live[1]) + int(replaced[1]),
        inputs=[dict(values) for values in inputs if isinstance(values, Mapping)],
        first_offers=first_offers,
    )
