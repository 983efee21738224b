"""Experiments in the decision log's database, and what the customers enrolled in them did."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.columns import CUSTOMER_KEY
from serving.decision_log.records import (
    DEFAULT_LAYER,
    CustomerDay,
    CustomerOutcome,
    Experiment,
    FirstOffer,
    Variant,
)
from serving.decision_log.repository import DecisionLog


def insert_experiment(
    log: DecisionLog,
    experiment: Experiment,
    blocking: Callable[[Sequence[Experiment]], Experiment | None] = lambda stored: None,
) -> Experiment | Literal[False] | None:
    """Store an experiment unless ``blocking`` finds, among those stored, one that keeps it out.

    Returns None when stored, the blocking experiment when one did, and False, storing nothing,
    when one with its key exists. The look and the insert hold the table's write lock, so two
    workers creating experiments at once cannot both pass the look.
    """
    table = log.tables.experiments
    try:
        with log.engine.begin() as connection:
            _lock(connection, table)
            stored = [
                _experiment(row._mapping)
                for row in connection.execute(
                    sa.select(table).order_by(table.c.created_at, table.c.key)
                )
            ]
            if any(other.key == experiment.key for other in stored):
                return False
            blocked = blocking(stored)
            if blocked is not None:
                return blocked
            connection.execute(
                table.insert(),
                {
                    "key": experiment.key,
                    "description": experiment.description,
                    "variants": [dataclasses.asdict(variant) for variant in experiment.variants],
                    "starts_at": experiment.start,
                    "ends_at": experiment.end,
                    "created_at": experiment.created_at,
                    "layer": experiment.layer,
                    "control": experiment.control,
                    "planned_customers": experiment.planned_customers,
                    "stopped_at": experiment.stopped_at,
                },
            )
    except IntegrityError:
        return False
    return None


def _lock(connection: sa.Connection, table: sa.Table) -> None:
    """Take the experiments table's write lock for the rest of the transaction."""
    if connection.dialect.name == "postgresql":
        name = connection.dialect.identifier_preparer.format_table(table)
        connection.execute(sa.text(f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # SQLite: a write statement, even one that changes no row, takes the database's write
        # lock until the transaction ends; other writers wait for it (busy_timeout).
        connection.execute(table.update().where(sa.false()).values(key=table.c.key))


def stop_experiment(log: DecisionLog, key: str, at: dt.datetime) -> bool:
    """Record that the experiment stopped at ``at``; False when it had been stopped already."""
    table = log.tables.experiments
    with log.engine.begin() as connection:
        changed = connection.execute(
            table.update()
            .where(table.c.key == key, table.c.stopped_at.is_(None))
            .values(stopped_at=at)
        ).rowcount
    return bool(changed)


def all_experiments(log: DecisionLog) -> list[Experiment]:
    """All experiments, the first created first."""
    table = log.tables.experiments
    query = sa.select(table).order_by(table.c.created_at, table.c.key)
    with log.engine.connect() as connection:
        return [_experiment(row._mapping) for row in connection.execute(query)]


def find_experiment(log: DecisionLog, key: str) -> Experiment | None:
    """The experiment with this key, if any."""
    table = log.tables.experiments
    with log.engine.connect() as connection:
        row = connection.execute(sa.select(table).where(table.c.key == key)).first()
    return None if row is None else _experiment(row._mapping)


def customer_outcomes(log: DecisionLog, key: str) -> list[CustomerOutcome]:
    """Per enrolled customer of the experiment: decisions, offers shown, impressions, decisions
    clicked and accepted, the first decision's time, the accepted offers' revenue change and the
    first marketing withdrawal after enrolment."""
    return customer_outcomes_by_day(log, key)[0]


def customer_days(log: DecisionLog, key: str) -> list[CustomerDay]:
    """Per enrolled customer of the experiment and invoice date: decisions, and decisions with a
    click and with an accept (as :func:`customer_outcomes` counts them)."""
    return customer_outcomes_by_day(log, key)[1]


def customer_outcomes_by_day(
    log: DecisionLog, key: str
) -> tuple[list[CustomerOutcome], list[CustomerDay]]:
    """:func:`customer_outcomes` and :func:`customer_days` from one read of the decisions,
    grouped by customer and invoice date."""
    tables = log.tables
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    shown = (
        sa.select(offers.c.decision_id, sa.func.count().label("shown"))
        .group_by(offers.c.decision_id)
        .subquery()
    )

    def flag(kind: str) -> sa.ColumnElement[Any]:
        return sa.func.max(sa.case((events.c.type == kind, 1), else_=0))

    answered = (
        sa.select(
            events.c.decision_id,
            sa.func.sum(sa.case((events.c.type == "impression", 1), else_=0)).label("seen"),
            flag("click").label("clicked"),
            flag("accept").label("accepted"),
        )
        .group_by(events.c.decision_id)
        .subquery()
    )
    query = (
        sa.select(
            decisions.c.experiment_variant,
            decisions.c[CUSTOMER_KEY],
            # Read as stored: SQLite's text is parsed once per date (and once per customer for
            # the first decision's time), not once per row.
            sa.type_coerce(decisions.c.invoice_date, sa.String),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(shown.c.shown), 0),
            sa.func.coalesce(sa.func.sum(answered.c.seen), 0),
            sa.func.coalesce(sa.func.sum(answered.c.clicked), 0),
            sa.func.coalesce(sa.func.sum(answered.c.accepted), 0),
            sa.type_coerce(sa.func.min(decisions.c.created_at), sa.String),
        )
        .select_from(
            decisions.outerjoin(shown, shown.c.decision_id == decisions.c.decision_id).outerjoin(
                answered, answered.c.decision_id == decisions.c.decision_id
            )
        )
        .where(decisions.c.experiment_key == key)
        .group_by(
            decisions.c.experiment_variant, decisions.c[CUSTOMER_KEY], decisions.c.invoice_date
        )
        .order_by(
            decisions.c.experiment_variant, decisions.c[CUSTOMER_KEY], decisions.c.invoice_date
        )
    )
    with log.engine.connect() as connection:
        rows = connection.execute(query).all()
        revenue = _accepted_revenue(log, connection, key)
        objections = _objections(log, connection, key)
    dates: dict[Any, dt.date] = {}
    days: list[CustomerDay] = []
    # Per customer: decisions, offered, seen, clicked, accepted, and the first decision as read.
    totals: dict[tuple[str, str], list[Any]] = {}
    for variant, customer, day, count, offered, seen, clicked, accepted, first in rows:
        if day not in dates:
            dates[day] = day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
        days.append(
            CustomerDay(variant, customer, dates[day], int(count), int(clicked), int(accepted))
        )
        sums = totals.get((variant, customer))
        if sums is None:
            totals[variant, customer] = [count, offered, seen, clicked, accepted, first]
        else:
            for index, value in enumerate((count, offered, seen, clicked, accepted)):
                sums[index] += value
            sums[5] = min(sums[5], first)
    outcomes = []
    for (variant, customer), (count, offered, seen, clicked, accepted, first) in totals.items():
        change, unpriced = revenue.get(customer, (0.0, 0))
        outcomes.append(
            CustomerOutcome(
                variant=variant,
                customer_id=customer,
                decisions=int(count),
                offers_shown=int(offered),
                impressions=int(seen),
                clicked=int(clicked),
                accepted=int(accepted),
                first_decided_at=_as_utc(first),
                revenue_change_sek=change,
                unpriced_accepts=unpriced,
                objected_at=objections.get(customer),
            )
        )
    return outcomes, days


def first_offers(log: DecisionLog, key: str) -> tuple[int, list[FirstOffer]]:
    """The experiment's number of decisions, and the first offer (rank 1) of each decision that
    showed one, by invoice date and decision."""
    tables = log.tables
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    accepted = (
        sa.select(events.c.decision_id, events.c.offer_id)
        .where(events.c.type == "accept")
        .distinct()
        .subquery()
    )
    query = (
        sa.select(
            decisions.c.decision_id,
            decisions.c[CUSTOMER_KEY],
            decisions.c.invoice_date,
            decisions.c.experiment_variant,
            offers.c.offer_id,
            offers.c.propensity,
            accepted.c.offer_id.is_not(None),
        )
        .select_from(
            decisions.join(
                offers,
                (offers.c.decision_id == decisions.c.decision_id) & (offers.c.rank == 1),
            ).outerjoin(
                accepted,
                (accepted.c.decision_id == offers.c.decision_id)
                & (accepted.c.offer_id == offers.c.offer_id),
            )
        )
        .where(decisions.c.experiment_key == key)
        .order_by(decisions.c.invoice_date, decisions.c.decision_id)
    )
    counted = sa.select(sa.func.count()).where(decisions.c.experiment_key == key)
    with log.engine.connect() as connection:
        total = int(connection.execute(counted).scalar_one())
        rows = connection.execute(query).all()
    return total, [
        FirstOffer(
            decision_id=decision_id,
            customer_id=customer,
            invoice_date=day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)),
            variant=variant,
            offer_id=offer_id,
            propensity=None if propensity is None else float(propensity),
            accepted=bool(was_accepted),
        )
        for decision_id, customer, day, variant, offer_id, propensity, was_accepted in rows
    ]


def _as_utc(value: Any) -> dt.datetime:
    """A MIN() of a time column: SQLite hands back the stored text (naive UTC), PostgreSQL a
    datetime; read both as the column reads its values."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _accepted_revenue(
    log: DecisionLog, connection: sa.Connection, key: str
) -> dict[str, tuple[float, int]]:
    """Per customer: the monthly revenue change of the offers they accepted, and how many
    accepted offers had neither a logged saving nor a fee change to compute it from."""
    decisions, events = log.tables.decisions, log.tables.events
    query = (
        sa.select(
            decisions.c.decision_id, decisions.c[CUSTOMER_KEY], decisions.c.log, events.c.offer_id
        )
        .select_from(events.join(decisions, decisions.c.decision_id == events.c.decision_id))
        .where(decisions.c.experiment_key == key, events.c.type == "accept")
    )
    totals: dict[str, tuple[float, int]] = defaultdict(lambda: (0.0, 0))
    counted: set[tuple[str, str]] = set()
    for decision_id, customer, logged, offer_id in connection.execute(query):
        # An offer accepted twice (two event ids) changes the bill once. PostgreSQL cannot
        # DISTINCT over a JSON column, so the repeat is dropped here.
        if (decision_id, offer_id) in counted:
            continue
        counted.add((decision_id, offer_id))
        change = monthly_revenue_change(logged or {}, offer_id)
        total, unpriced = totals[customer]
        totals[customer] = (total, unpriced + 1) if change is None else (total + change, unpriced)
    return dict(totals)


def monthly_revenue_change(logged: Mapping[str, Any], offer_id: str) -> float | None:
    """What an accepted offer changes the customer's monthly bill by, from what the engine
    logged for it: the negative of the customer's saving when there is one (plan fit: fees plus
    the overage of the usage they had), else its fee change at the price shown (the segment's
    fixed list, decided without usage: the catalog fee against today's plan fee, an add-on's
    fee, a loyalty discount, an invoice fee avoided). None when neither was logged (decided
    before fee changes were logged, or with today's plan fee unknown)."""
    for candidate in logged.get("candidates") or ():
        if candidate.get("offer_id") == offer_id:
            saving = candidate.get("customer_saving_sek_per_month")
            if saving is not None:
                return -float(saving)
            change = candidate.get("fee_change_sek_per_month")
            return None if change is None else float(change)
    return None


def _objections(log: DecisionLog, connection: sa.Connection, key: str) -> dict[str, dt.datetime]:
    """Per enrolled customer, the first marketing withdrawal received after their first decision
    in the experiment (through POST /v1/consents or ``offers consents sync --file``)."""
    decisions, changes = log.tables.decisions, log.tables.consent_changes
    enrolled = (
        sa.select(decisions.c[CUSTOMER_KEY], sa.func.min(decisions.c.created_at).label("first"))
        .where(decisions.c.experiment_key == key)
        .group_by(decisions.c[CUSTOMER_KEY])
        .subquery()
    )
    query = (
        sa.select(changes.c[CUSTOMER_KEY], changes.c.updated_at)
        .select_from(changes.join(enrolled, enrolled.c[CUSTOMER_KEY] == changes.c[CUSTOMER_KEY]))
        .where(
            changes.c.purpose == "marketing",
            changes.c.granted.is_(False),
            changes.c.updated_at >= enrolled.c.first,
        )
    )
    first: dict[str, dt.datetime] = {}
    for customer, moment in connection.execute(query):
        if customer not in first or moment < first[customer]:
            first[customer] = moment
    return first


def _experiment(row: sa.RowMapping) -> Experiment:
    return Experiment(
        key=row["key"],
        description=row["description"],
        variants=tuple(
            Variant(variant["name"], float(variant["weight"]), variant["policy"])
            for variant in row["variants"]
        ),
        start=row["starts_at"],
        end=row["ends_at"],
        layer=row["layer"] or DEFAULT_LAYER,
        control=row["control"],
        planned_customers=row["planned_customers"],
        created_at=row["created_at"],
        stopped_at=row["stopped_at"],
    )
