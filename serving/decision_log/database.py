"""The decision log's database connection: a SQLite file by default, PostgreSQL by configuration.

``OFFERS_DATABASE_URL`` names the database. A 2xx from the API promises the decision or event is
durably stored, so every write commits before the answer. SQLite runs in WAL mode with
``synchronous=FULL``: each commit fsyncs the WAL (0.3 ms on a quiet disk of this kind, several ms
on a busy one). ``NORMAL`` is several times cheaper and survives a crash of the service, but can
lose the last commits in a power cut, and those are decisions already printed on invoices. An
operator who accepts that can say so in the URL: ``sqlite:///data/offers.db?synchronous=NORMAL``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydantic_core
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from core.database import sqlalchemy_url

SQLITE_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")


def _json_default(value: Any) -> Any:
    # numpy's values only: pydantic's writer knows dates and datetimes itself.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_json(value: Any) -> str:
    """The log's JSON columns as written: compact, numpy values and dates included, NaN and
    infinities as null (JSON has neither). pydantic's JSON writer, a third of the cost of the
    standard library's for a decision's candidate scores, which every decision logged pays."""
    return pydantic_core.to_json(value, inf_nan_mode="null", fallback=_json_default).decode()


def loads_json(text: str | bytes) -> Any:
    """The log's JSON columns as read: pydantic's JSON reader, a sixth to under half of the
    standard library's time for the 5,000 newest model inputs the drift gauges read (73 numbers
    each), with the GIL held, and the same values (NaN and infinities included). What it refuses
    and the standard library reads (a lone surrogate escape, which an earlier release's writer
    could store; nesting deeper than 200) is read by the standard library."""
    try:
        return pydantic_core.from_json(text, allow_inf_nan=True)
    except ValueError:
        return json.loads(text)


# Connections: as many as the threads that may ask for one at once (anyio's default thread pool
# runs 40 sync routes concurrently), so the pool is never what a request waits on; a checkout
# that still waits gives up after POOL_TIMEOUT_SECONDS and the answer is 503, not a 500.
POOL_SIZE = 8
POOL_OVERFLOW = 40 - POOL_SIZE
POOL_TIMEOUT_SECONDS = 5.0
POSTGRES_CONNECT_TIMEOUT_SECONDS = 3
POSTGRES_STATEMENT_TIMEOUT_MS = 10_000
# libpq options (psycopg2 and psycopg 3 alike pass them through): a peer that stops acknowledging
# what was sent (a cable pulled, a host gone) ends the connection after TCP_USER_TIMEOUT_MS; an
# idle one is probed after a few seconds. A peer that acknowledges but never answers is the
# deadline's business (circuit.py).
POSTGRES_TCP_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


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
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        hide_parameters=True,
        json_serializer=dumps_json,
        json_deserializer=loads_json,
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
    parsed = sa.engine.make_url(sqlalchemy_url(url))
    # The URL's own libpq options (a search_path, say) are kept; the statement timeout is added.
    options = " ".join(
        part
        for part in (
            str(parsed.query.get("options", "")),
            f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS}",
        )
        if part
    )
    return sa.create_engine(
        parsed.difference_update_query(["options"]),
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        # A server that does not answer fails the request in seconds, not at the OS's TCP timeout
        # (minutes); a statement that runs away is cancelled by the server.
        connect_args={
            "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
            "options": options,
            **POSTGRES_TCP_OPTIONS,
        },
        hide_parameters=True,
        json_serializer=dumps_json,
        json_deserializer=loads_json,
    )
