"""The decision log: every decision, its offers, the events that come back, and the experiments.

SQLAlchemy Core over a SQLite file by default, PostgreSQL by configuration
(``OFFERS_DATABASE_URL``). A 2xx from the API promises the decision or event is durably stored, so
every write commits before the answer. SQLite runs in WAL mode with ``synchronous=FULL``: each
commit fsyncs the WAL (0.3 ms on a quiet disk of this kind, several ms on a busy one). ``NORMAL``
is several times cheaper and survives a crash of the service, but can lose the last commits in a
power cut, and those are decisions already printed on invoices. An operator who accepts that can
say so in the URL: ``sqlite:///data/offers.db?synchronous=NORMAL``.

SQLite's own checkpoints run inside whichever commit crosses 1,000 pages of WAL: every hundred or
so decisions, one answer waited 5–8 ms while the WAL was copied into the database and fsynced. A
decision log on a SQLite file checkpoints in a background thread instead (``WalCheckpointer``),
so a request's commit only appends to the WAL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from core.contract import OFFER_EVENTS
from core.database import is_sqlite_file, sqlalchemy_url
from core.files import replacing
from core.settings import Settings, get_settings
from serving.decision.decline_cap import Decline, DeclineCap

logger = logging.getLogger("serving.decision_log")

# The strongest event decides an offer's outcome in offer_events; no event or only an impression:
# ignored.
_OUTCOME_BY_EVENT = {"accept": "accepted", "decline": "declined", "click": "clicked"}
_EVENT_STRENGTH = {"impression": 0, "click": 1, "decline": 2, "accept": 3}


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


@dataclass(frozen=True)
class LogTables:
    metadata: sa.MetaData
    decisions: sa.Table
    decision_offers: sa.Table
    events: sa.Table
    experiments: sa.Table


def build_tables(schema: str | None = None) -> LogTables:
    """The log's tables, optionally in a PostgreSQL schema."""
    metadata = sa.MetaData(schema=schema)
    decisions = sa.Table(
        "decisions",
        metadata,
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("invoice_id", sa.String(64), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
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
        sa.Index("ix_decisions_customer", "customer_id", "invoice_date", "created_at"),
        sa.Index("ix_decisions_experiment", "experiment_key", "experiment_variant"),
    )
    decision_offers = sa.Table(
        "decision_offers",
        metadata,
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("propensity", sa.Float),
        sa.Column("score", sa.Float),
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
    )
    return LogTables(metadata, decisions, decision_offers, events, experiments)


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
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    # The customer's latest decisions, one per invoice, and the offers declined in them.
    latest = (
        sa.select(decisions.c.decision_id, decisions.c.invoice_date, decisions.c.created_at)
        .where(decisions.c.customer_id == sa.bindparam("customer_id"))
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


class SqliteStatement:
    """A request-path statement run straight on the sqlite3 connection.

    SQLAlchemy compiles it once (SQL text and parameter order) and the columns' own bind processors
    convert the values (JSON with the log's serialiser, timestamps as naive UTC), so the rows are
    the ones SQLAlchemy would write; what is skipped is SQLAlchemy's per-execution bookkeeping,
    about a third of a millisecond a decision across the lookups and the two inserts.
    """

    def __init__(
        self, statement: sa.Executable, dialect: Any, column_keys: list[str] | None = None
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self._literals = dict(compiled.params)  # values written into the statement itself
        self._order = tuple(compiled.positiontup or ())
        self._processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._order
        )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        merged = {**self._literals, **values}
        return tuple(
            merged[name] if process is None else process(merged[name])
            for name, process in zip(self._order, self._processors, strict=True)
        )


@dataclass(frozen=True)
class SqliteStatements:
    find: SqliteStatement
    recent_declines: SqliteStatement
    insert_decision: SqliteStatement
    insert_offers: SqliteStatement


def build_sqlite_statements(
    tables: LogTables, statements: Statements, dialect: Any
) -> SqliteStatements:
    """The request path's statements for a SQLite log: the same as ``statements``, compiled."""
    return SqliteStatements(
        find=SqliteStatement(statements.find, dialect),
        recent_declines=SqliteStatement(statements.recent_declines, dialect),
        insert_decision=SqliteStatement(
            statements.insert_decision, dialect, [c.name for c in tables.decisions.columns]
        ),
        insert_offers=SqliteStatement(
            statements.insert_offers, dialect, [c.name for c in tables.decision_offers.columns]
        ),
    )


@dataclass(frozen=True)
class LoggedOffer:
    offer_id: str
    rank: int
    propensity: float | None
    score: float | None


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as it is logged: the answer given and what it was based on.

    ``response_json`` is the answer as sent; ``log`` what else the decision was made from
    (propensities, every candidate and why it was blocked, churn risk), without repeating it.
    """

    decision_id: str
    invoice_id: str
    customer_id: str
    invoice_date: dt.date
    created_at: dt.datetime
    policy: str
    model_version: str | None
    experiment_key: str | None
    experiment_variant: str | None
    degraded: str | None
    consent: Mapping[str, bool]
    response_json: str
    log: Mapping[str, Any]
    offers: tuple[LoggedOffer, ...]


@dataclass(frozen=True)
class StoredDecision:
    """What a repeated request needs: who the decision was for and the answer given."""

    decision_id: str
    customer_id: str
    response_json: str


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    decision_id: str
    offer_id: str
    type: str
    occurred_at: dt.datetime
    received_at: dt.datetime


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))


SQLITE_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")
CHECKPOINT_INTERVAL_SECONDS = 0.5


class WalCheckpointer:
    """Copies the WAL into the database file from its own thread, twice a second.

    The request path's connections never checkpoint (``wal_autocheckpoint=0``). A PASSIVE
    checkpoint waits for nobody: it copies what no reader still needs, and the WAL starts over
    once everything was copied. When the log closes, a last checkpoint empties the WAL.
    """

    def __init__(self, engine: Engine, interval_s: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        self._engine = engine
        self._interval = interval_s
        self._stop = threading.Event()
        self.last: tuple[int, int, int] | None = None  # the newest round's (busy, pages, copied)
        self._thread = threading.Thread(
            target=self._run, name="decision-log-checkpoint", daemon=True
        )
        self._thread.start()

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """(busy, WAL pages, pages copied), as SQLite reports them."""
        with self._engine.connect() as connection:
            busy, wal_pages, copied = connection.exec_driver_sql(
                f"PRAGMA wal_checkpoint({mode})"
            ).one()
        return int(busy), int(wal_pages), int(copied)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.last = self.checkpoint()
            except sa.exc.SQLAlchemyError as error:
                # The next round tries again; until then the WAL only grows.
                logger.warning("WAL checkpoint failed", extra={"error": type(error).__name__})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)
        try:
            self.checkpoint("TRUNCATE")
        except sa.exc.SQLAlchemyError as error:
            logger.warning("last WAL checkpoint failed", extra={"error": type(error).__name__})


def _sqlite_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    # `?synchronous=NORMAL` trades durability in a power cut for a cheaper commit; FULL unless said.
    synchronous = str(parsed.query.get("synchronous", "FULL")).upper()
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(
            f"OFFERS_DATABASE_URL synchronous={synchronous} is not one of "
            f"{', '.join(SQLITE_SYNCHRONOUS)}"
        )
    parsed = parsed.difference_update_query(["synchronous"])
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed,
        connect_args={"timeout": 30.0, "check_same_thread": False},
        pool_size=8,
        max_overflow=24,
        hide_parameters=True,
        json_serializer=_dumps,
    )

    @sa_event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Checkpoints are the WalCheckpointer's job, off the request path.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    return engine


def create_log_engine(url: str) -> Engine:
    """An engine for the log's URL: SQLite (WAL, fsync on commit) or PostgreSQL."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=24,
        hide_parameters=True,
        json_serializer=_dumps,
    )


class DecisionLog:
    """Decisions, their offers, events and experiments in one database."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.engine = create_log_engine(url)
        self.tables = build_tables(schema)
        self.statements = build_statements(self.tables)
        self._create_tables()
        self.checkpointer = WalCheckpointer(self.engine) if is_sqlite_file(url) else None
        self._sqlite = (
            build_sqlite_statements(self.tables, self.statements, self.engine.dialect)
            if self.engine.dialect.name == "sqlite" and schema is None
            else None
        )

    def _create_tables(self, attempts: int = 3) -> None:
        # Several API workers start at once: two may both find a table missing and one CREATE
        # then fails. Looking again finds the table the other one made.
        for attempt in range(attempts):
            try:
                self.tables.metadata.create_all(self.engine)
                return
            except sa.exc.DBAPIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    @property
    def is_local(self) -> bool:
        """True for a SQLite file or memory database: no other machine to wait on."""
        return self.engine.dialect.name == "sqlite"

    @classmethod
    def from_settings(cls, settings: Settings) -> DecisionLog:
        return cls(settings.database_url)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def warm_up(self) -> None:
        """Run each statement of the request path once (writes rolled back), compiling them."""
        self.find("warm-up")
        self.recent_declines("warm-up", 1)
        self.offers_of("warm-up")
        self.find_event("warm-up")
        now = dt.datetime.now(dt.UTC)
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                connection.execute(
                    self.statements.insert_decision,
                    {
                        "decision_id": "warm-up",
                        "invoice_id": "warm-up",
                        "customer_id": "warm-up",
                        "invoice_date": now.date(),
                        "created_at": now,
                        "policy": "none",
                        "consent": {},
                        "response": "{}",
                        "log": {},
                    },
                )
                connection.execute(
                    self.statements.insert_offers,
                    [{"decision_id": "warm-up", "offer_id": "warm-up", "rank": 1}],
                )
            finally:
                transaction.rollback()

    # Decisions ------------------------------------------------------------------------------

    @contextmanager
    def _sqlite_connection(self) -> Iterator[Any]:
        """A pooled sqlite3 connection with the engine's pragmas, back to the pool afterwards."""
        connection = self.engine.raw_connection()
        try:
            yield connection.driver_connection
        except sqlite3.OperationalError as error:
            # As SQLAlchemy reports them on every other path: the API answers 503 to these, and
            # an invoice already decided is an IntegrityError.
            raise sa.exc.OperationalError(None, None, error) from error
        except sqlite3.IntegrityError as error:
            raise IntegrityError(None, None, error) from error
        finally:
            connection.close()

    def find(self, invoice_id: str) -> StoredDecision | None:
        """The decision already made for an invoice, if any."""
        rows = self._select("find", {"invoice_id": invoice_id})
        return None if not rows else StoredDecision(rows[0][0], rows[0][1], rows[0][2])

    def record(self, record: DecisionRecord) -> tuple[StoredDecision, bool]:
        """Store a decision durably; when the invoice already has one, return that one instead.

        The UNIQUE invoice_id decides a race between two requests for the same invoice: the second
        insert fails and both answer with the decision that was committed first.
        """
        row = {
            "decision_id": record.decision_id,
            "invoice_id": record.invoice_id,
            "customer_id": record.customer_id,
            "invoice_date": record.invoice_date,
            "created_at": record.created_at,
            "policy": record.policy,
            "model_version": record.model_version,
            "experiment_key": record.experiment_key,
            "experiment_variant": record.experiment_variant,
            "degraded": record.degraded,
            "consent": dict(record.consent),
            "response": record.response_json,
            "log": dict(record.log),
        }
        offers = [
            {
                "decision_id": record.decision_id,
                "offer_id": offer.offer_id,
                "rank": offer.rank,
                "propensity": offer.propensity,
                "score": offer.score,
            }
            for offer in record.offers
        ]
        try:
            self._insert(row, offers)
        except IntegrityError:
            stored = self.find(record.invoice_id)
            if stored is None:  # not an invoice clash after all
                raise
            return stored, False
        return StoredDecision(record.decision_id, record.customer_id, record.response_json), True

    def recent_declines(self, customer_id: str, invoices: int) -> frozenset[str]:
        """The offers the decline cap of ``invoices`` invoices blocks for the customer now.

        The log reads the customer's latest decisions (as many as the cap's window) and their
        declines; :class:`~serving.decision.decline_cap.DeclineCap` decides.
        """
        cap = DeclineCap(invoices)
        if cap.window == 0:
            return frozenset()
        rows = self._select("recent_declines", {"customer_id": customer_id, "invoices": cap.window})
        latest = list(dict.fromkeys(decision_id for decision_id, _ in rows))
        declines = [Decline(offer_id, decision_id) for decision_id, offer_id in rows if offer_id]
        return cap.capped(declines, latest)

    # The request path's statements: straight on sqlite3 for a SQLite log, else through SQLAlchemy.

    def _select(
        self, name: Literal["find", "recent_declines"], parameters: dict[str, Any]
    ) -> Sequence[Any]:
        if self._sqlite is not None:
            statement: SqliteStatement = getattr(self._sqlite, name)
            with self._sqlite_connection() as sqlite:
                return sqlite.execute(statement.sql, statement.parameters(parameters)).fetchall()
        with self.engine.connect() as connection:
            return connection.execute(getattr(self.statements, name), parameters).all()

    def _insert(self, row: dict[str, Any], offers: list[dict[str, Any]]) -> None:
        """The decision and its offers in one transaction."""
        if self._sqlite is None:
            with self.engine.begin() as connection:
                connection.execute(self.statements.insert_decision, row)
                if offers:
                    connection.execute(self.statements.insert_offers, offers)
            return
        decision, offer = self._sqlite.insert_decision, self._sqlite.insert_offers
        with self._sqlite_connection() as sqlite:
            try:
                sqlite.execute(decision.sql, decision.parameters(row))  # opens the transaction
                if offers:
                    sqlite.executemany(offer.sql, [offer.parameters(o) for o in offers])
                sqlite.commit()
            except BaseException:
                sqlite.rollback()
                raise

    def offers_of(self, decision_id: str) -> frozenset[str] | None:
        """The offers shown in a decision; None when there is no such decision."""
        with self.engine.connect() as connection:
            rows = connection.execute(self.statements.offers_of, {"decision_id": decision_id}).all()
        if not rows:
            return None
        return frozenset(row[1] for row in rows if row[1] is not None)

    # Events ---------------------------------------------------------------------------------

    def find_event(self, event_id: str) -> EventRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(self.statements.find_event, {"event_id": event_id}).first()
        return None if row is None else EventRecord(**row._mapping)

    def record_event(self, event: EventRecord) -> tuple[EventRecord, bool]:
        """Store an event durably; the same event_id again stores nothing and returns the first."""
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    self.statements.insert_event,
                    {
                        "event_id": event.event_id,
                        "decision_id": event.decision_id,
                        "offer_id": event.offer_id,
                        "type": event.type,
                        "occurred_at": event.occurred_at,
                        "received_at": event.received_at,
                    },
                )
        except IntegrityError:
            stored = self.find_event(event.event_id)
            if stored is None:
                raise
            return stored, False
        return event, True

    # Export ---------------------------------------------------------------------------------

    def offer_events(self) -> pa.Table:
        """Every logged offer with its outcome, in the offer_events contract schema."""
        tables = self.tables
        decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
        shown = sa.select(
            decisions.c.decision_id,
            decisions.c.invoice_id,
            decisions.c.customer_id,
            offers.c.offer_id,
            decisions.c.created_at,
            offers.c.rank,
            decisions.c.policy,
            offers.c.propensity,
        ).select_from(decisions.join(offers, offers.c.decision_id == decisions.c.decision_id))
        happened = sa.select(
            events.c.decision_id, events.c.offer_id, events.c.type, events.c.occurred_at
        )
        with self.engine.connect() as connection:
            shown_rows = connection.execute(shown).all()
            event_rows = connection.execute(happened).all()
        strongest: dict[tuple[str, str], tuple[int, dt.datetime, str]] = {}
        for decision_id, offer_id, kind, occurred_at in event_rows:
            strength = _EVENT_STRENGTH.get(kind, 0)
            key = (decision_id, offer_id)
            best = strongest.get(key)
            # The strongest event wins; between equals, the first time it happened.
            if best is None or (strength, -occurred_at.timestamp()) > (
                best[0],
                -best[1].timestamp(),
            ):
                strongest[key] = (strength, occurred_at, kind)
        columns: dict[str, list[Any]] = {name: [] for name in OFFER_EVENTS.column_names}
        for (
            decision_id,
            invoice_id,
            customer_id,
            offer_id,
            created_at,
            rank,
            policy,
            p,
        ) in shown_rows:
            best = strongest.get((decision_id, offer_id))
            outcome = _OUTCOME_BY_EVENT.get(best[2], "ignored") if best else "ignored"
            columns["decision_id"].append(decision_id)
            columns["invoice_id"].append(invoice_id)
            columns["customer_id"].append(customer_id)
            columns["offer_id"].append(offer_id)
            columns["shown_at"].append(created_at)
            columns["rank"].append(rank)
            columns["policy"].append(policy)
            columns["propensity"].append(p)
            columns["outcome"].append(outcome)
            columns["outcome_at"].append(best[1] if best and outcome != "ignored" else None)
        return pa.Table.from_pydict(columns, schema=OFFER_EVENTS.arrow_schema())

    def export_offer_events(self, out: Path) -> int:
        """Merge the logged offers into the offer_events file at ``out``; return the rows exported.

        Rows already in the file stay, except those the log has again (same decision_id and
        offer_id), which take the log's newer outcome. The file is replaced in one rename, so a
        failure leaves the old file as it was.
        """
        fresh = self.offer_events()
        merged = _merge_offer_events(out, fresh) if out.exists() else fresh
        _write_atomically(merged, out)
        return fresh.num_rows


def _row_keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(
        table["decision_id"].cast(pa.string()), table["offer_id"].cast(pa.string()), "\x1f"
    )


def _merge_offer_events(path: Path, fresh: pa.Table) -> pa.Table:
    existing = pq.read_table(path)
    missing = [name for name in OFFER_EVENTS.column_names if name not in existing.column_names]
    if missing:
        raise ValueError(f"{path}: offer_events lacks the columns {', '.join(missing)}")
    contract = OFFER_EVENTS.arrow_schema()
    # Keep the contract's types, and any extra columns a user added, as they were.
    for field in contract:
        index = existing.schema.get_field_index(field.name)
        existing = existing.set_column(index, field, existing[field.name].cast(field.type))
    kept = existing.filter(pc.invert(pc.is_in(_row_keys(existing), value_set=_row_keys(fresh))))
    merged = pa.concat_tables([kept, fresh], promote_options="default")
    ordered = [*OFFER_EVENTS.column_names]
    ordered += [name for name in merged.column_names if name not in ordered]
    return merged.select(ordered)


def _write_atomically(table: pa.Table, out: Path) -> None:
    with replacing(out, durable=True) as (temporary,):
        pq.write_table(table, temporary)


def export_offer_events(out: Path | None = None) -> int:
    """Append the logged decisions and their outcomes to offer_events (``offers events export``)."""
    settings = get_settings()
    target = out or settings.data_dir / OFFER_EVENTS.file_name
    log = DecisionLog.from_settings(settings)
    try:
        return log.export_offer_events(target)
    finally:
        log.close()
