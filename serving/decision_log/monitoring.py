"""What model monitoring reads from the decision log for one period: the answers and how many
were degraded, the customer inputs of the newest model decisions, and the first-placed offers
the model scored, summed per day with how many were accepted.

Every read is bounded, and none reads a decision's row but the newest inputs: the database
counts from indexes alone (``schema``: ``ix_decisions_period``, ``ix_decisions_model_inputs``,
``ix_superseded_decisions_period``), sums each decision's first offer found through the partial
index ``ix_decision_offers_first``, and only the inputs of at most ``limit`` decisions, the
newest, come back as rows. Nothing that names
a customer or an invoice leaves this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from serving.decision_log.repository import DecisionLog
from serving.decision_log.schema import FIRST_PLACE, holds_model_inputs
from training.drift import Outcomes

ACCEPT = "accept"


@dataclass(frozen=True)
class MonitoredPeriod:
    """The decision log's figures for one period.

    ``inputs`` are those of the newest ``limit`` model decisions of the period, of
    ``decisions_with_inputs`` in all; ``outcomes`` cover every offer of the period that the
    monitored model placed first.
    """

    since: dt.datetime
    until: dt.datetime
    answers: int
    degraded: int
    decisions_with_inputs: int
    inputs: list[Mapping[str, Any]]
    outcomes: list[Outcomes]


def monitored_period(
    log: DecisionLog,
    since: dt.datetime,
    until: dt.datetime,
    limit: int,
    model_version: str | None = None,
) -> MonitoredPeriod:
    """The period's answers (live and superseded decisions: each was answered), the inputs of
    its newest ``limit`` model decisions, and its first-placed offers summed per day.

    ``model_version`` (``offer-ranker/3``): only the offers that version placed first count, so
    that a challenger's predictions or an earlier champion's do not blur the champion's
    calibration; None counts every model's. The inputs are the customers', whichever model
    read them.
    """
    tables = log.tables
    decisions, superseded = tables.decisions, tables.superseded_decisions
    offers, events = tables.decision_offers, tables.events

    def counts(table: sa.Table) -> Any:
        return sa.select(sa.func.count(), sa.func.count(table.c.degraded)).where(
            table.c.created_at >= since, table.c.created_at < until
        )

    in_period = sa.and_(decisions.c.created_at >= since, decisions.c.created_at < until)
    with_inputs = sa.and_(in_period, holds_model_inputs(decisions))
    newest = (
        sa.select(decisions.c.model_inputs)
        .where(with_inputs)
        .order_by(decisions.c.created_at.desc())
        .limit(limit)
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
    # date() of the naive UTC timestamp: the UTC day, in SQLite (text) and PostgreSQL (a date).
    day = sa.func.date(decisions.c.created_at)
    per_day = (
        sa.select(
            day.label("day"),
            sa.func.count(),
            sa.func.sum(offers.c.acceptance),
            sa.func.sum(sa.case((accepted, 1), else_=0)),
        )
        .select_from(decisions.join(offers, offers.c.decision_id == decisions.c.decision_id))
        .where(
            in_period,
            # A literal, as in the partial index on first places, so that SQLite plans with it.
            offers.c.rank == sa.literal(FIRST_PLACE, literal_execute=True),
            offers.c.acceptance.is_not(None),
        )
        .group_by(day)
    )
    if model_version is not None:
        per_day = per_day.where(decisions.c.model_version == model_version)
    with log.engine.connect() as connection:
        live = connection.execute(counts(decisions)).one()
        replaced = connection.execute(counts(superseded)).one()
        scored = connection.execute(sa.select(sa.func.count()).where(with_inputs)).scalar_one()
        inputs = connection.execute(newest).scalars().all()
        outcomes = [
            Outcomes(_day(found), int(n), float(predicted), int(k))
            for found, n, predicted, k in connection.execute(per_day)
        ]
    return MonitoredPeriod(
        since=since,
        until=until,
        answers=int(live[0]) + int(replaced[0]),
        degraded=int(live[1]) + int(replaced[1]),
        decisions_with_inputs=int(scored),
        inputs=[dict(values) for values in inputs if isinstance(values, Mapping)],
        outcomes=outcomes,
    )


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
