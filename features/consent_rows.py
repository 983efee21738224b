"""Whole ``customer_consent`` rows in the online store: read with their event time, written the
way materialize writes them.

The consent path (``POST /v1/consents``, ``offers consents sync``) changes a customer's consent
row in place: it reads the row as the store holds it, applies the answer
(``features.consent_changes``) and writes the whole row back through materialize's own writers
(``features.materialize.online_writer``), so the row has exactly the layout a materialize gives it.
Those writers overwrite whatever the store holds, whatever its event time (Feast's own Redis writer
would skip a row older than the stored one); the event time written is never older than the row's
anyway.

SQLite and Redis, the online stores the settings allow, are read directly: one statement per 500
customers, or one pipelined ``HMGET`` per customer.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.columns import EVENT_TIMESTAMP
from core.settings import Settings
from features.materialize import encode_rows, entity_keys, online_writer, sqlite_path
from features.online import value_decoder

if TYPE_CHECKING:
    from feast import FeatureStore

CONSENT_VIEW = "customer_consent"
KEYS_PER_STATEMENT = 500


@dataclass(frozen=True)
class OnlineConsentRow:
    """A customer's consent row as the online store holds it, and the time it is stamped with."""

    values: dict[str, Any]  # every feature of the view; None where the store has no value
    event_time: dt.datetime | None


@dataclass(frozen=True)
class ConsentRowWrite:
    """A whole consent row to write for one customer."""

    customer_id: str
    values: Mapping[str, Any]
    event_time: dt.datetime


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_event_time(value: Any) -> dt.datetime | None:
    # Stored as Feast stores it, ``int(naive_utc.timestamp())``, and read back as Feast reads it:
    # ``fromtimestamp`` undoes the local-time reading on a machine whose zone is not UTC.
    if value is None:
        return None
    return dt.datetime.fromtimestamp(int(value)).replace(tzinfo=dt.UTC)


class OnlineConsentRows:
    """Reads and writes customers' whole consent rows in one store.

    ``timeout_seconds`` bounds each SQLite call's wait for a lock (a materialize holding the write
    lock makes a write give up after it). ``redis_client`` is the Redis client to use; by default
    the one Feast uses for the store, whose timeouts ``OnlineFeatures.bound_reads`` sets.
    """

    def __init__(
        self,
        store: FeatureStore,
        settings: Settings,
        *,
        timeout_seconds: float | None = None,
        redis_client: Any = None,
    ) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        self.store = store
        self.view = store.get_feature_view(CONSENT_VIEW)
        self.join_key = self.view.entity_columns[0].name
        self.names = [feature.name for feature in self.view.features]
        self.decoders = [value_decoder(str(feature.dtype)) for feature in self.view.features]
        self.kind = store.config.online_store.type
        if self.kind not in {"sqlite", "redis"}:
            raise ValueError(
                f"the consent path reads SQLite and Redis online stores, not {self.kind}"
            )
        busy = 60.0 if timeout_seconds is None else timeout_seconds
        self._busy_seconds = busy
        self._table = compute_table_id(store.project, self.view, False)
        self._redis: Any = None
        if self.kind == "redis":
            # The client Feast itself uses, built from the same connection string.
            online: Any = store._get_provider().online_store
            self._redis = redis_client or online._get_client(store.config.online_store)
        self._writer = online_writer(store, settings, busy_seconds=busy, redis_client=self._redis)

    def read(self, customer_ids: Sequence[str]) -> dict[str, OnlineConsentRow]:
        """The rows of the customers the store holds one for; the others are left out."""
        ids = list(dict.fromkeys(customer_ids))
        if not ids:
            return {}
        keys = entity_keys(self.join_key, ids)
        reader = self._read_sqlite if self.kind == "sqlite" else self._read_redis
        return reader(dict(zip(keys, ids, strict=True)))

    def write(self, rows: Sequence[ConsentRowWrite]) -> None:
        """Write whole rows, many in one statement (SQLite) or one pipeline (Redis)."""
        if not rows:
            return
        frame = pd.DataFrame(
            {
                self.join_key: [row.customer_id for row in rows],
                EVENT_TIMESTAMP: pd.to_datetime([row.event_time for row in rows], utc=True),
                **{name: [row.values.get(name) for row in rows] for name in self.names},
            }
        )
        self._writer.write(encode_rows(self.view, frame), lambda advance: None)

    def _read_sqlite(self, customers: dict[bytes, str]) -> dict[str, OnlineConsentRow]:
        decoders: dict[str, Callable[[bytes | None], Any]] = dict(
            zip(self.names, self.decoders, strict=True)
        )
        values: dict[bytes, dict[str, Any]] = {}
        times: dict[bytes, dt.datetime | None] = {}
        table = self._table.replace('"', '""')
        connection = sqlite3.connect(sqlite_path(self.store), timeout=self._busy_seconds)
        try:
            for keys in _chunks(list(customers), KEYS_PER_STATEMENT):
                marks = ",".join("?" * len(keys))
                statement = (
                    f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" '
                    f"WHERE entity_key IN ({marks})"
                )
                for key, feature, raw, stamp in connection.execute(statement, list(keys)):
                    decode = decoders.get(feature)
                    if decode is None:  # a feature the view no longer has
                        continue
                    values.setdefault(key, {})[feature] = decode(raw)
                    moment = _sqlite_event_time(stamp)
                    known = times.get(key)
                    if moment is not None and (known is None or moment > known):
                        times[key] = moment
        finally:
            connection.close()
        return {
            customers[key]: OnlineConsentRow(
                {name: found.get(name) for name in self.names}, times.get(key)
            )
            for key, found in values.items()
            if any(value is not None for value in found.values())
        }

    def _read_redis(self, customers: dict[bytes, str]) -> dict[str, OnlineConsentRow]:
        from feast.infra.online_stores.helpers import _mmh3
        from google.protobuf.timestamp_pb2 import Timestamp

        fields = [_mmh3(f"{self.view.name}:{name}") for name in self.names]
        fields.append(f"_ts:{self.view.name}".encode())
        project = self.store.project.encode()
        keys = list(customers)
        answers: list[Any] = []
        for part in _chunks(keys, KEYS_PER_STATEMENT):
            with self._redis.pipeline(transaction=False) as pipe:
                for key in part:
                    pipe.hmget(key + project, fields)
                answers.extend(pipe.execute())
        found: dict[str, OnlineConsentRow] = {}
        for key, raw_values in zip(keys, answers, strict=True):
            values = {
                name: decode(raw)
                for name, decode, raw in zip(
                    self.names, self.decoders, raw_values[:-1], strict=True
                )
            }
            if all(value is None for value in values.values()):
                continue
            moment = None
            if raw_values[-1]:
                stamp = Timestamp.FromString(raw_values[-1])
                moment = dt.datetime.fromtimestamp(
                    stamp.seconds + stamp.nanos / 1_000_000_000, tz=dt.UTC
                )
            found[customers[key]] = OnlineConsentRow(values, moment)
        return found
