"""The decision log's database connection: a SQLite file by default, PostgreSQL by configuration.

``OFFERS_DATABASE_URL`` names the database. A 2xx from the API promises the decision or event is
durably stored, so every write commits before the answer. SQLite runs in WAL mode with
``synchronous=FULL``: each commit fsyncs the WAL (0.3 ms on a quiet disk of this kind, several ms
on a busy one). ``NORMAL`` is several times cheaper and survives a crash of the service, but can
lose the last commits in a power cut, and those are decisions already printed on invoices. An
operator who accepts that can say so in the URL: ``sqlite:///data/offers.db?synchronous=NORMAL``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from core.database import sqlalchemy_url

SQLITE_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_json(value: Any) -> str:
    """The log's JSON columns as written: compact, numpy values and dates included, no NaN."""
    return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))


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
        json_serializer=dumps_json,
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
        json_serializer=dumps_json,
    )
