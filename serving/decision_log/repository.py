"""The decision log: every decision, its offers and the events that come back, one database.

The request path's look-ups and writes (the decision already made for an invoice, the frequency
cap's recent declines, the decision with its offers and the provisional decision it replaces) run
straight on sqlite3 for a SQLite log and through SQLAlchemy otherwise; the rest always through
SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.columns import CUSTOMER_KEY
from core.database import is_sqlite_file
from core.settings import Settings
from serving.decision.decline_cap import Decline, DeclineCap
from serving.decision_log.circuit import LogCircuit
from serving.decision_log.database import POOL_OVERFLOW, POOL_SIZE, create_log_engine
from serving.decision_log.records import DecisionRecord, EventRecord, StoredDecision
from serving.decision_log.schema import add_missing_columns, build_tables, drop_replaced_indexes
from serving.decision_log.sqlite import (
    SqliteStatement,
    WalCheckpointer,
    build_sqlite_statements,
    sqlite_connection,
)
from serving.decision_log.statements import build_statements

# Invoice ids per look-up of many: well under the bound parameters every database allows.
FIND_MANY_CHUNK = 500
# Outside the request id pattern (a space and "#"): no invoice, decision or customer id can
# carry it.
WARM_UP_ID = "# warm-up #"

P = ParamSpec("P")
R = TypeVar("R")


class DecisionLog:
    """Decisions, their offers, events and experiments in one database.

    A log on another machine (PostgreSQL) runs the request path's calls through a
    :class:`~serving.decision_log.circuit.LogCircuit` when ``deadline_s`` is given: each waits at
    most that long, and a database that stops answering is refused at once for ``cool_off_s``.
    A SQLite log has no other machine to wait on and runs them in place.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        deadline_s: float | None = None,
        cool_off_s: float = 5.0,
    ) -> None:
        self.url = url
        self.engine = create_log_engine(url)
        self.tables = build_tables(schema)
        self.statements = build_statements(self.tables)
        self._create_tables()
        self.circuit = (
            LogCircuit(
                deadline_s=deadline_s,
                cool_off_s=cool_off_s,
                # More threads than pooled connections: a call stuck on a connection that no
                # longer answers holds one of each, so there is always a thread for the next.
                threads=POOL_SIZE + POOL_OVERFLOW + 8,
            )
            if deadline_s is not None and self.engine.dialect.name != "sqlite"
            else None
        )
        self.checkpointer = WalCheckpointer(self.engine) if is_sqlite_file(url) else None
        self._sqlite = (
            build_sqlite_statements(self.tables, self.statements, self.engine.dialect)
            if self.engine.dialect.name == "sqlite" and schema is None
            else None
        )
        # This process's decision writes to a SQLite log, one at a time. SQLite lets one
        # connection write at once and a second one waits in its busy handler, which sleeps 1,
        # 2, 5, 10… ms between tries however soon the first one commits (on the event loop, for
        # the single requests decided there). A lock hands the write over at the commit. Only
        # the decision writes take it: reads never wait on a writer (WAL), and the rarer writes
        # (events, consents, erasure, experiments) still meet SQLite's busy handler.
        self._sqlite_write = threading.Lock()

    def _create_tables(self, attempts: int = 3) -> None:
        # Several API workers start at once: two may both find a table (or a column) missing and
        # one CREATE (or ALTER) then fails. Looking again finds what the other one made.
        for attempt in range(attempts):
            try:
                self.tables.metadata.create_all(self.engine)
                self._add_missing_columns()
                return
            except sa.exc.DBAPIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _add_missing_columns(self) -> None:
        """Bring a log created by an earlier release up to this schema, keeping every row.

        Columns added since a table's first release are nullable or have a server default
        (``schema.add_missing_columns``), so the old rows stay as they were; the indexes of
        tables that already existed are created when missing, and those this release replaced
        are dropped.
        """
        with self.engine.begin() as connection:
            add_missing_columns(connection, self.tables.metadata)
            drop_replaced_indexes(connection, self.tables.metadata.schema)
        for table in self.tables.metadata.tables.values():
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)

    @property
    def is_local(self) -> bool:
        """True for a SQLite file or memory database: no other machine to wait on."""
        return self.engine.dialect.name == "sqlite"

    @classmethod
    def from_settings(cls, settings: Settings, *, deadline_s: float | None = None) -> DecisionLog:
        """The configured log; each call on PostgreSQL waits at most ``deadline_s`` when given,
        else ``OFFERS_DATABASE_TIMEOUT_MS`` (the request path's limit)."""
        return cls(
            settings.database_url,
            deadline_s=settings.database_timeout_ms / 1000.0 if deadline_s is None else deadline_s,
            cool_off_s=settings.database_cool_off_seconds,
        )

    def bounded(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)``, within the circuit's deadline when the log has one;
        raises ``DecisionLogUnavailable`` past it or while the circuit is open."""
        if self.circuit is None:
            return function(*args, **kwargs)
        return self.circuit.call(function, *args, **kwargs)

    def bounded_within(
        self, deadline_s: float, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """As :meth:`bounded`, with a deadline of its own, for a call that may take longer."""
        if self.circuit is None:
            return function(*args, **kwargs)
        return self.circuit.call_within(deadline_s, function, *args, **kwargs)

    def close(self) -> None:
        if self.circuit is not None:
            self.circuit.close()
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers (within the deadline, with the circuit closed)."""
        try:
            self.bounded(self._ping)
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def _ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def warm_up(self) -> None:
        """Run each statement of the request path once (writes rolled back), compiling them.

        The rows use an id no request can carry (requests allow letters, digits and ``._-``), so a
        stored invoice can never collide with the warm-up's insert.
        """
        key = WARM_UP_ID
        self.find(key)
        self.recent_declines(key, 1)
        self.recent_declines_many([(key, key), (f"{key}-2", key)], 1)
        self.offers_of(key)
        self.find_event(key)
        now = dt.datetime.now(dt.UTC)
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                connection.execute(
                    self.statements.insert_decision,
                    {
                        "decision_id": key,
                        "invoice_id": key,
                        CUSTOMER_KEY: key,
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
                    [{"decision_id": key, "offer_id": key, "rank": 1}],
                )
                replaced = {"superseded_id": key, "superseded_at": now, "superseded_by": key}
                connection.execute(self.statements.copy_superseded, replaced)
                connection.execute(self.statements.delete_superseded, replaced)
            finally:
                transaction.rollback()

    # Decisions ------------------------------------------------------------------------------

    def find(self, invoice_id: str) -> StoredDecision | None:
        """The invoice's live decision, if any (a superseded one is not)."""
        rows = self.bounded(self._select, "find", {"invoice_id": invoice_id})
        if not rows:
            return None
        decision_id, customer_id, response_json, provisional = rows[0]
        # sqlite3 hands the condition back as 0 or 1.
        return StoredDecision(decision_id, customer_id, response_json, bool(provisional))

    def find_many(self, invoice_ids: Sequence[str]) -> dict[str, StoredDecision]:
        """The live decisions of these invoices, by invoice id, in one query (a few for many
        invoices); invoices without one are left out."""
        wanted = list(dict.fromkeys(invoice_ids))
        if len(wanted) == 1:
            stored = self.find(wanted[0])
            return {} if stored is None else {wanted[0]: stored}
        return self.bounded(self._find_many, wanted)

    def _find_many(self, invoice_ids: list[str]) -> dict[str, StoredDecision]:
        found: dict[str, StoredDecision] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(invoice_ids), FIND_MANY_CHUNK):
                chunk = invoice_ids[start : start + FIND_MANY_CHUNK]
                rows = connection.execute(self.statements.find_many, {"invoice_ids": chunk})
                for invoice_id, decision_id, customer_id, response_json, provisional in rows:
                    found[invoice_id] = StoredDecision(
                        decision_id, customer_id, response_json, bool(provisional)
                    )
        return found

    def record(
        self, record: DecisionRecord, *, superseding: str | None = None
    ) -> tuple[StoredDecision, bool]:
        """Store a decision durably; when the invoice already has one, return that one instead.

        The UNIQUE invoice_id decides a race between two requests for the same invoice: the second
        insert fails and both answer with the decision that was committed first.

        ``superseding`` names the invoice's provisional decision that this one replaces: in the
        same transaction it is copied to ``superseded_decisions`` and leaves ``decisions``. When
        another request replaced it first, nothing is stored and that request's decision is
        returned, so two retries at once answer with one decision.
        """
        row, offers = _decision_rows(record)
        replaced = (
            None
            if superseding is None
            else {
                "superseded_id": superseding,
                "superseded_at": dt.datetime.now(dt.UTC),
                "superseded_by": record.decision_id,
            }
        )
        try:
            inserted = self.bounded(self._insert, row, offers, replaced)
        except IntegrityError:
            stored = self.find(record.invoice_id)
            if stored is None:  # not an invoice clash after all
                raise
            return stored, False
        if not inserted:
            stored = self.find(record.invoice_id)
            if stored is None:  # the replaced decision left without a successor: be the first
                return self.record(record)
            return stored, False
        stored = StoredDecision(
            record.decision_id, record.customer_id, record.response_json, record.provisional
        )
        return stored, True

    def record_many(
        self, pending: Sequence[tuple[DecisionRecord, str | None]]
    ) -> list[tuple[StoredDecision, bool]]:
        """Store many decisions durably in one transaction; each as :meth:`record` stores one.

        ``pending`` holds each decision with the provisional decision it replaces (or None); at
        most one decision per invoice. The answer, in the same order, is each stored decision and
        whether it is the one given (False: another request stored the invoice's decision first,
        and that one is returned). Either every given decision that no other request beat is
        stored, or, when the database fails, none is and the error is raised. When another request
        stored (or replaced) one of the invoices meanwhile, the transaction is rolled back, those
        invoices take the stored decision and the rest are written again in one transaction.
        """
        if len(pending) == 1:
            record, superseding = pending[0]
            return [self.record(record, superseding=superseding)]
        results: dict[int, tuple[StoredDecision, bool]] = {}
        waiting = {index: item for index, item in enumerate(pending)}
        while waiting:
            try:
                inserted = self.bounded(self._insert_many, list(waiting.values()))
                error: Exception | None = None
            except IntegrityError as clash:
                inserted, error = False, clash
            if inserted:
                for index, (record, _) in waiting.items():
                    stored = StoredDecision(
                        record.decision_id,
                        record.customer_id,
                        record.response_json,
                        record.provisional,
                    )
                    results[index] = (stored, True)
                break
            # Another request stored or replaced one of these invoices first: it holds.
            now_stored = self.find_many([record.invoice_id for record, _ in waiting.values()])
            changed = False
            for index, (record, superseding) in list(waiting.items()):
                found = now_stored.get(record.invoice_id)
                if found is None:
                    if superseding is not None:
                        # The replaced decision left without a successor: be the first.
                        waiting[index] = (record, None)
                        changed = True
                elif found.decision_id != superseding:
                    results[index] = (found, False)
                    del waiting[index]
                    changed = True
            if not changed:  # not a clash between invoices after all
                if error is not None:
                    raise error
                raise RuntimeError("a replaced decision could not be moved and is still live")
        return [results[index] for index in range(len(pending))]

    def recent_declines(
        self, customer_id: str, invoices: int, *, deciding: str | None = None
    ) -> frozenset[str]:
        """The offers the decline cap of ``invoices`` invoices blocks for the customer now.

        The log reads the customer's latest decisions (as many as the cap's window) and their
        declines; :class:`~serving.decision.decline_cap.DeclineCap` decides. ``deciding`` is the
        invoice being decided: a provisional decision of its own is not an invoice before it.
        """
        cap = DeclineCap(invoices)
        if cap.window == 0:
            return frozenset()
        # No invoice id is empty (an id has a character at least), so "" leaves none out.
        parameters = {CUSTOMER_KEY: customer_id, "invoices": cap.window, "deciding": deciding or ""}
        rows = self.bounded(self._select, "recent_declines", parameters)
        latest = list(dict.fromkeys(decision_id for decision_id, _, _ in rows))
        declines = [Decline(offer_id, decision_id) for decision_id, _, offer_id in rows if offer_id]
        return cap.capped(declines, latest)

    def recent_declines_many(
        self, deciding: Sequence[tuple[str, str]], invoices: int
    ) -> dict[tuple[str, str], frozenset[str]]:
        """:meth:`recent_declines` of many (customer id, invoice being decided) pairs, read once
        per customer rather than once per invoice: on SQLite one indexed look-up per customer, on
        a database server one query per :data:`FIND_MANY_CHUNK` customers."""
        pairs = list(dict.fromkeys(deciding))
        cap = DeclineCap(invoices)
        if cap.window == 0 or not pairs:
            return dict.fromkeys(pairs, frozenset())
        if len(pairs) == 1:
            customer_id, invoice_id = pairs[0]
            return {pairs[0]: self.recent_declines(customer_id, invoices, deciding=invoice_id)}
        return self.bounded(self._recent_declines_many, pairs, cap)

    def _recent_declines_many(
        self, pairs: list[tuple[str, str]], cap: DeclineCap
    ) -> dict[tuple[str, str], frozenset[str]]:
        deciding: dict[str, list[str]] = {}
        for customer_id, invoice_id in pairs:
            deciding.setdefault(customer_id, []).append(invoice_id)
        # Each customer's latest decisions, the invoices being decided among them or not: as many
        # more as the customer has invoices being decided, so that the window stays full.
        reach = cap.window + max(len(invoice_ids) for invoice_ids in deciding.values())
        # Per customer, newest first: its decisions (decision id, invoice id) and declines.
        latest: dict[str, list[tuple[str, str]]] = {}
        declines: dict[str, list[Decline]] = {}
        for customer_id, invoice_id, decision_id, offer_id in self._latest_decisions(
            list(deciding), reach
        ):
            known = latest.setdefault(customer_id, [])
            if not known or known[-1][0] != decision_id:
                known.append((decision_id, invoice_id))
            if offer_id:
                declines.setdefault(customer_id, []).append(Decline(offer_id, decision_id))
        result: dict[tuple[str, str], frozenset[str]] = {}
        for customer_id, invoice_id in pairs:
            before = [
                decision_id
                for decision_id, decided in latest.get(customer_id, [])
                if decided != invoice_id
            ][: cap.window]
            result[(customer_id, invoice_id)] = cap.capped(declines.get(customer_id, []), before)
        return result

    # The request path's statements: straight on sqlite3 for a SQLite log, else through SQLAlchemy.

    def _latest_decisions(
        self, customers: list[str], reach: int
    ) -> Iterator[tuple[str, str, str, str | None]]:
        """(customer id, invoice id, decision id, declined offer id or None) of each customer's
        latest ``reach`` decisions, newest first, a decision's rows together."""
        if self._sqlite is not None:
            statement = self._sqlite.recent_declines
            with sqlite_connection(self.engine) as sqlite:
                for customer_id in customers:
                    # "" leaves no invoice out: the caller drops each pair's own invoice.
                    parameters = {CUSTOMER_KEY: customer_id, "invoices": reach, "deciding": ""}
                    rows = sqlite.execute(statement.sql, statement.parameters(parameters))
                    for decision_id, invoice_id, offer_id in rows.fetchall():
                        yield customer_id, invoice_id, decision_id, offer_id
            return
        with self.engine.connect() as connection:
            for start in range(0, len(customers), FIND_MANY_CHUNK):
                chunk = customers[start : start + FIND_MANY_CHUNK]
                rows = connection.execute(
                    self.statements.recent_declines_many, {"customer_ids": chunk, "reach": reach}
                )
                for customer_id, invoice_id, decision_id, offer_id in rows:
                    yield customer_id, invoice_id, decision_id, offer_id

    def _select(
        self, name: Literal["find", "recent_declines"], parameters: dict[str, Any]
    ) -> Sequence[Any]:
        if self._sqlite is not None:
            statement: SqliteStatement = getattr(self._sqlite, name)
            with sqlite_connection(self.engine) as sqlite:
                return sqlite.execute(statement.sql, statement.parameters(parameters)).fetchall()
        with self.engine.connect() as connection:
            return connection.execute(getattr(self.statements, name), parameters).all()

    def _insert(
        self,
        row: dict[str, Any],
        offers: list[dict[str, Any]],
        replaced: dict[str, Any] | None = None,
    ) -> bool:
        """The decision and its offers in one transaction, after moving the decision it replaces.

        False, with nothing stored, when the decision to replace is no longer live: another
        request replaced it first. SQLite runs replacements one after the other (the later one
        copies nothing); on PostgreSQL a copy made while the other replacement was uncommitted
        fails on superseded_decisions' key once it commits, an IntegrityError like an invoice's.
        """
        return self._write([row], offers, [] if replaced is None else [replaced])

    def _insert_many(self, pending: Sequence[tuple[DecisionRecord, str | None]]) -> bool:
        """Decisions, their offers and the replacements of provisional ones in one transaction;
        False, with nothing stored, when a decision to replace is no longer live."""
        now = dt.datetime.now(dt.UTC)
        rows: list[dict[str, Any]] = []
        offers: list[dict[str, Any]] = []
        replaced: list[dict[str, Any]] = []
        for record, superseding in pending:
            row, shown = _decision_rows(record)
            rows.append(row)
            offers.extend(shown)
            if superseding is not None:
                replaced.append(
                    {
                        "superseded_id": superseding,
                        "superseded_at": now,
                        "superseded_by": record.decision_id,
                    }
                )
        return self._write(rows, offers, replaced)

    def _write(
        self,
        rows: list[dict[str, Any]],
        offers: list[dict[str, Any]],
        replaced: list[dict[str, Any]],
    ) -> bool:
        if self._sqlite is None:
            with self.engine.connect() as connection, connection.begin() as transaction:
                for replacement in replaced:
                    copied = connection.execute(
                        self.statements.copy_superseded, replacement
                    ).rowcount
                    deleted = connection.execute(
                        self.statements.delete_superseded, replacement
                    ).rowcount
                    if (copied, deleted) != (1, 1):
                        transaction.rollback()
                        return False
                connection.execute(
                    self.statements.insert_decision, rows[0] if len(rows) == 1 else rows
                )
                if offers:
                    connection.execute(self.statements.insert_offers, offers)
            return True
        statements = self._sqlite
        decision, offer = statements.insert_decision, statements.insert_offers
        decision_rows = [decision.parameters(row) for row in rows]
        offer_rows = [offer.parameters(shown) for shown in offers]
        with self._sqlite_write, sqlite_connection(self.engine) as sqlite:
            try:
                # The first write opens the transaction and takes SQLite's write lock, so
                # replacements of one decision run one after the other: the later finds it gone.
                copy, delete = statements.copy_superseded, statements.delete_superseded
                for replacement in replaced:
                    copied = sqlite.execute(copy.sql, copy.parameters(replacement)).rowcount
                    deleted = sqlite.execute(delete.sql, delete.parameters(replacement)).rowcount
                    if (copied, deleted) != (1, 1):
                        sqlite.rollback()
                        return False
                if len(decision_rows) == 1:
                    sqlite.execute(decision.sql, decision_rows[0])
                else:
                    sqlite.executemany(decision.sql, decision_rows)
                if offer_rows:
                    sqlite.executemany(offer.sql, offer_rows)
                sqlite.commit()
            except BaseException:
                sqlite.rollback()
                raise
        return True

    def offers_of(self, decision_id: str) -> frozenset[str] | None:
        """The offers shown in a decision; None when there is no such decision."""
        shown = self.shown_in(decision_id)
        return None if shown is None else shown[1]

    def shown_in(self, decision_id: str) -> tuple[dt.datetime, frozenset[str]] | None:
        """When a decision was made and the offers it showed; None when there is no such
        decision."""
        rows = self.bounded(self._rows, self.statements.offers_of, {"decision_id": decision_id})
        if not rows:
            return None
        return rows[0][0], frozenset(row[1] for row in rows if row[1] is not None)

    # Events ---------------------------------------------------------------------------------

    def find_event(self, event_id: str) -> EventRecord | None:
        rows = self.bounded(self._rows, self.statements.find_event, {"event_id": event_id})
        return EventRecord(**rows[0]._mapping) if rows else None

    def record_event(self, event: EventRecord) -> tuple[EventRecord, bool]:
        """Store an event durably; the same event_id again stores nothing and returns the first."""
        try:
            self.bounded(self._insert_event, event)
        except IntegrityError:
            stored = self.find_event(event.event_id)
            if stored is None:
                raise
            return stored, False
        return event, True

    def _insert_event(self, event: EventRecord) -> None:
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

    def _rows(self, statement: sa.Executable, parameters: dict[str, Any]) -> Sequence[Any]:
        with self.engine.connect() as connection:
            return connection.execute(statement, parameters).all()


def _decision_rows(record: DecisionRecord) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``decisions`` row of a record and its ``decision_offers`` rows."""
    row = {
        "decision_id": record.decision_id,
        "invoice_id": record.invoice_id,
        CUSTOMER_KEY: record.customer_id,
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
        "model_inputs": None if record.model_inputs is None else dict(record.model_inputs),
    }
    offers = [
        {
            "decision_id": record.decision_id,
            "offer_id": offer.offer_id,
            "rank": offer.rank,
            "propensity": offer.propensity,
            "score": offer.score,
            "acceptance": offer.acceptance,
        }
        for offer in record.offers
    ]
    return row, offers
