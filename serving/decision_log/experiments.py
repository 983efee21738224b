"""Experiments in the decision log's database, and the counts of the decisions made under them."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from serving.decision_log.records import Experiment, Variant, VariantCounts
from serving.decision_log.repository import DecisionLog


def insert_experiment(log: DecisionLog, experiment: Experiment) -> bool:
    """Store an experiment; False, storing nothing, when one with its key exists."""
    try:
        with log.engine.begin() as connection:
            connection.execute(
                log.tables.experiments.insert(),
                {
                    "key": experiment.key,
                    "description": experiment.description,
                    "variants": [dataclasses.asdict(variant) for variant in experiment.variants],
                    "starts_at": experiment.start,
                    "ends_at": experiment.end,
                    "created_at": experiment.created_at,
                },
            )
    except IntegrityError:
        return False
    return True


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


def variant_counts(log: DecisionLog, key: str) -> dict[str, VariantCounts]:
    """Customers, decisions, offers shown and decisions with an accepted offer, per variant."""
    tables = log.tables
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    shown = (
        sa.select(offers.c.decision_id, sa.func.count().label("shown"))
        .group_by(offers.c.decision_id)
        .subquery()
    )
    accepted = (
        sa.select(events.c.decision_id).where(events.c.type == "accept").distinct().subquery()
    )
    query = (
        sa.select(
            decisions.c.experiment_variant,
            sa.func.count(sa.distinct(decisions.c.customer_id)),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(shown.c.shown), 0),
            sa.func.count(accepted.c.decision_id),
        )
        .select_from(
            decisions.outerjoin(shown, shown.c.decision_id == decisions.c.decision_id).outerjoin(
                accepted, accepted.c.decision_id == decisions.c.decision_id
            )
        )
        .where(decisions.c.experiment_key == key)
        .group_by(decisions.c.experiment_variant)
    )
    with log.engine.connect() as connection:
        return {
            row[0]: VariantCounts(int(row[1]), int(row[2]), int(row[3]), int(row[4]))
            for row in connection.execute(query)
        }


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
        created_at=row["created_at"],
    )
