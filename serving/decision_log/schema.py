"""The decision log's tables: decisions, the offers each showed, the events back, experiments,
and the consent changes received through the API.

``decisions`` holds each invoice's live decision, one per invoice. A degraded decision without
offers is provisional: a later request for the invoice decides afresh, and a decision that is not
provisional takes its place. The provisional one then moves to ``superseded_decisions`` (with when
and by which decision), so nothing once answered leaves the log. The tables are created when
missing, so a log created before ``superseded_decisions`` existed gains it on the next start; a
column added to a table later is added to an existing table the same way (``add_missing_columns``),
with its default for the rows already stored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.columns import CUSTOMER_KEY
from serving.decision_log.records import DEFAULT_LAYER


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timestamps stored as naive UTC (SQLite has no time zones) and read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps in the decision log must carry a time zone")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# Indexes of the decisions table that earlier releases created and this one replaced: dropped
# when a log is opened (drop_replaced_indexes), so that no insert keeps paying for them.
REPLACED_INDEXES = ("ix_decisions_created_at",)

FIRST_PLACE = 1


def holds_model_inputs(decisions: sa.Table) -> sa.ColumnElement[bool]:
    """The decisions a model scored, whose customer inputs were logged.

    A decision no model scored holds JSON null, not SQL NULL (the column's JSON type writes None
    so). Monitoring's queries use this same expression, so that the partial index on it serves
    them.
    """
    return sa.and_(
        decisions.c.model_inputs.is_not(None),
        sa.cast(decisions.c.model_inputs, sa.Text) != sa.literal("null", literal_execute=True),
    )


@dataclass(frozen=True)
class LogTables:
    metadata: sa.MetaData
    decisions: sa.Table
    decision_offers: sa.Table
    events: sa.Table
    experiments: sa.Table
    superseded_decisions: sa.Table
    consent_changes: sa.Table
    erasures: sa.Table


def _decision_columns(*, one_per_invoice: bool) -> list[sa.Column[Any]]:
    """A decision's columns, for the live decisions and for the superseded ones alike."""
    return [
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("invoice_id", sa.String(64), nullable=False, unique=one_per_invoice),
        sa.Column(CUSTOMER_KEY, sa.String(64), nullable=False),
        sa.Column("invoice_date", sa.Date, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(128)),
        sa.Column("experiment_key", sa.String(64)),
        sa.Column("experiment_variant", sa.String(64)),
        sa.Column("degraded", sa.String(64)),
        sa.Column("consent", sa.JSON, nullable=False),
        # The exact JSON answered, so that asking again returns the same bytes.
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("log", sa.JSON, nullable=False),
        # Added after the first release: nullable, so that decisions logged before keep their rows.
        sa.Column("model_inputs", sa.JSON, nullable=True),
    ]


def build_tables(schema: str | None = None) -> LogTables:
    """The log's tables, optionally in a PostgreSQL schema."""
    metadata = sa.MetaData(schema=schema)
    decisions = sa.Table(
        "decisions",
        metadata,
        *_decision_columns(one_per_invoice=True),
        sa.Index("ix_decisions_customer", CUSTOMER_KEY, "invoice_date", "created_at"),
        sa.Index("ix_decisions_experiment", "experiment_key", "experiment_variant"),
    )
    # Model monitoring reads a whole window (28 days, a quarter of a million decisions or more)
    # every few minutes in each API worker. With these indexes it never reads a decision's row,
    # which is kilobytes of answer and log: its counts are read from the indexes alone, and its
    # per-day sums read each decision's first offer (a short row) through a partial index. On
    # 250,000 decisions a whole report took 1.55–1.95 s of CPU with only an index on created_at,
    # 0.65–0.82 s with these (README, Monitoring).
    # The decisions of a period: answers, degraded ones, each model's, and the id the offers join
    # on.
    sa.Index(
        "ix_decisions_period",
        decisions.c.created_at,
        decisions.c.degraded,
        decisions.c.model_version,
        decisions.c.decision_id,
    )
    # The decisions whose model inputs were logged, newest first.
    sa.Index(
        "ix_decisions_model_inputs",
        decisions.c.created_at,
        sqlite_where=holds_model_inputs(decisions),
        postgresql_where=holds_model_inputs(decisions),
    )
    decision_offers = sa.Table(
        "decision_offers",
        metadata,
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("propensity", sa.Float),
        sa.Column("score", sa.Float),
        # Added after the first release, nullable like model_inputs.
        sa.Column("acceptance", sa.Float, nullable=True),
    )
    # The offer each decision placed first, with the acceptance predicted for it: what
    # prediction drift compares with what came back.
    sa.Index(
        "ix_decision_offers_first",
        decision_offers.c.decision_id,
        decision_offers.c.acceptance,
        sqlite_where=decision_offers.c.rank == FIRST_PLACE,
        postgresql_where=decision_offers.c.rank == FIRST_PLACE,
    )
    events = sa.Table(
        "events",
        metadata,
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Index("ix_events_decision", "decision_id", "offer_id"),
    )
    experiments = sa.Table(
        "experiments",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("starts_at", UtcDateTime, nullable=False),
        sa.Column("ends_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        # Added after the first release: a log created before them gains them on the next start
        # (add_missing_columns), its experiments in the default layer, never stopped.
        sa.Column("layer", sa.String(64), nullable=False, server_default=DEFAULT_LAYER),
        sa.Column("control", sa.String(64)),
        sa.Column("planned_customers", sa.Integer),
        sa.Column("stopped_at", UtcDateTime),
    )
    # Provisional decisions a later decision for the same invoice replaced: kept for audit. They
    # showed no offers, so no offers or events move with them.
    superseded_decisions = sa.Table(
        "superseded_decisions",
        metadata,
        *_decision_columns(one_per_invoice=False),
        sa.Column("superseded_at", UtcDateTime, nullable=False),
        sa.Column("superseded_by", sa.String(36), nullable=False),
        sa.Index("ix_superseded_decisions_invoice", "invoice_id"),
        # Monitoring counts a period's answers here too (see ix_decisions_period).
        sa.Index("ix_superseded_decisions_period", "created_at", "degraded"),
    )
    # Consent answers received through POST /v1/consents or `offers consents sync --file`,
    # stored before they are pushed to the online store (applied_at stays null until one is), so
    # that a push that fails loses nothing, and a materialize, which reloads the consent view
    # from the consents table alone, can be followed by a sync that applies them again.
    consent_changes = sa.Table(
        "consent_changes",
        metadata,
        sa.Column("change_id", sa.String(64), primary_key=True),
        sa.Column(CUSTOMER_KEY, sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("applied_at", UtcDateTime),
        sa.Index("ix_consent_changes_customer", CUSTOMER_KEY, "purpose", "updated_at"),
    )
    # What `offers customers erase` removed (GDPR Art. 17): counts and a time, never who.
    erasures = sa.Table(
        "erasures",
        metadata,
        sa.Column("erasure_id", sa.String(36), primary_key=True),
        sa.Column("erased_at", UtcDateTime, nullable=False),
        sa.Column("decisions", sa.Integer, nullable=False),
        sa.Column("offers_shown", sa.Integer, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("superseded_decisions", sa.Integer, nullable=False),
        sa.Column("consent_changes", sa.Integer, nullable=False),
        sa.Column("online_values", sa.Integer, nullable=False),
    )
    return LogTables(
        metadata,
        decisions,
        decision_offers,
        events,
        experiments,
        superseded_decisions,
        consent_changes,
        erasures,
    )


def add_missing_columns(connection: sa.Connection, metadata: sa.MetaData) -> list[str]:
    """Add to each existing table the columns it lacks (``ALTER TABLE … ADD COLUMN``), each with
    its server default, so that rows already stored keep working; returns ``table.column`` added.

    Only nullable columns or columns with a server default can be added this way, which is what
    every column added after a table's first release must be.
    """
    inspector = sa.inspect(connection)
    preparer = connection.dialect.identifier_preparer
    added = []
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name, table.schema)}
        for column in table.columns:
            if column.name in present:
                continue
            definition = sa.schema.CreateColumn(column).compile(dialect=connection.dialect)
            connection.execute(
                sa.text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {definition}")
            )
            added.append(f"{table.name}.{column.name}")
    return added


def drop_replaced_indexes(connection: sa.Connection, schema: str | None) -> list[str]:
    """Drop the indexes of :data:`REPLACED_INDEXES` the log's decisions table still has;
    returns those dropped."""
    preparer = connection.dialect.identifier_preparer
    prefix = f"{preparer.quote_schema(schema)}." if schema else ""
    present = {
        index["name"]
        for index in sa.inspect(connection).get_indexes("decisions", schema)
        if index["name"]
    }
    dropped = [name for name in REPLACED_INDEXES if name in present]
    for name in dropped:
        # IF EXISTS: another worker opening the log at the same moment may have dropped it.
        connection.execute(sa.text(f"DROP INDEX IF EXISTS {prefix}{preparer.quote(name)}"))
    return dropped
