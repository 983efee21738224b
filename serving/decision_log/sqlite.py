"""A decision log on SQLite: request-path statements straight on sqlite3, checkpoints off it.

SQLite's own checkpoints run inside whichever commit crosses 1,000 pages of WAL: every hundred or
so decisions, one answer waited 5–8 ms while the WAL was copied into the database and fsynced. A
decision log on a SQLite file checkpoints in a background thread instead (``WalCheckpointer``),
so a request's commit only appends to the WAL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from serving.decision_log.schema import LogTables
from serving.decision_log.statements import Statements

logger = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_SECONDS = 0.5


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
    copy_superseded: SqliteStatement
    delete_superseded: SqliteStatement


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
        copy_superseded=SqliteStatement(statements.copy_superseded, dialect),
        delete_superseded=SqliteStatement(statements.delete_superseded, dialect),
    )


@contextmanager
def sqlite_connection(engine: Engine) -> Iterator[Any]:
    """A pooled sqlite3 connection with the engine's pragmas, back to the pool afterwards."""
    connection = engine.raw_connection()
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
