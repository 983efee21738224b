"""Reading a customer's features straight from the online store, for the request path.

``FeatureStore.get_online_features`` spends most of its time for one customer building its
response (protobuf values turned into Python one feature at a time, per view), not in the store:
for the 76 customer features of ``offer_ranker_v1`` that is most of a millisecond. This reader asks
the store once — one SQL statement over the views' tables on SQLite, one ``HMGET`` on Redis, where
all views of an entity live in the same hash — and decodes the values itself. It reads the layout
Feast writes (``features.materialize`` writes the same), and answers exactly what
``get_online_features(...).to_dict()`` answers: the join key and every feature, ``None`` where the
store has no value. Other online stores go through Feast.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.materialize import entity_keys

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

_DOUBLE = struct.Struct("<d")
# SQLite's own default lock wait, for readers nobody has bounded (the batch paths).
DEFAULT_SQLITE_BUSY_SECONDS = 5.0
# Keys read in one Redis pipeline: a batch endpoint call's invoices.
MANY_KEYS = 500
MMAP_BYTES = 1 << 34  # address space only; the operating system's page cache holds the pages


_value_proto: Any = None


def _decode_any(raw: bytes | None) -> Any:
    global _value_proto
    if not raw:
        return None
    if _value_proto is None:  # imported on first use: importing Feast's protos is slow
        from feast.protos.feast.types.Value_pb2 import Value

        _value_proto = Value
    value = _value_proto.FromString(raw)
    kind = value.WhichOneof("val")
    return None if kind is None else getattr(value, kind)


def _decode_double(raw: bytes | None) -> Any:
    # A double ValueProto is its tag (field 5, fixed 64 bits: 0x29) and eight little-endian bytes.
    if raw and len(raw) == 9 and raw[0] == 0x29:
        return _DOUBLE.unpack_from(raw, 1)[0]
    return _decode_any(raw)


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    """The unsigned varint starting at ``at`` and the position after it."""
    result = shift = 0
    while True:
        byte = raw[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _decode_int64(raw: bytes | None) -> Any:
    # An int64 ValueProto is its tag (field 4, varint: 0x20) and the value as a varint, negative
    # numbers in two's complement over ten bytes. Anything else goes through protobuf.
    if raw and raw[0] == 0x20 and raw[-1] < 0x80:
        value, end = _varint(raw, 1)
        if end == len(raw):
            return value - (1 << 64) if value >= 1 << 63 else value
    return _decode_any(raw)


def _decode_string(raw: bytes | None) -> Any:
    # A string ValueProto is its tag (field 2, length-delimited: 0x12), the length, the UTF-8.
    if raw and raw[0] == 0x12:
        length, start = _varint(raw, 1) if len(raw) > 1 else (-1, 0)
        if start + length == len(raw):
            return raw[start:].decode("utf-8")
    return _decode_any(raw)


# Feast value types decoded without protobuf; the others (and anything unexpected) go through it.
_DECODERS: dict[str, Callable[[bytes | None], Any]] = {
    "Float64": _decode_double,
    "Int64": _decode_int64,
    "String": _decode_string,
}


class FeaturesNotApplied(ValueError):
    """The store's registry lacks features this release reads: it was applied by an earlier one."""

    def __init__(self, view: str, features: Sequence[str]) -> None:
        super().__init__(
            f"feature view {view} has no feature(s) {', '.join(features)}: the store was built by "
            "an earlier release; run `offers features build`, `offers features apply` and "
            "`offers features materialize` (or `offers retrain`)"
        )


def value_decoder(feast_type: str) -> Callable[[bytes | None], Any]:
    """The decoder of a stored ``ValueProto`` of a Feast type (``Float64``, ``Int64``, …)."""
    return _DECODERS.get(feast_type, _decode_any)


@dataclass(frozen=True)
class _View:
    name: str
    table: str
    features: tuple[str, ...]
    decoders: tuple[Callable[[bytes | None], Any], ...]


class OnlineReader:
    """One entity's values of a fixed list of ``view:feature`` references."""

    def __init__(
        self,
        store: FeatureStore,
        refs: Sequence[str],
        sqlite_busy_seconds: float = DEFAULT_SQLITE_BUSY_SECONDS,
    ) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        self.store = store
        self.refs = list(refs)
        by_view: dict[str, list[str]] = {}
        for ref in self.refs:
            view, _, feature = ref.partition(":")
            by_view.setdefault(view, []).append(feature)
        views: list[_View] = []
        join_keys: set[str] = set()
        for name, features in by_view.items():
            definition = store.get_feature_view(name)
            join_keys.update(column.name for column in definition.entity_columns)
            dtypes = {feature.name: str(feature.dtype) for feature in definition.features}
            unknown = [feature for feature in features if feature not in dtypes]
            if unknown:
                raise FeaturesNotApplied(name, unknown)
            views.append(
                _View(
                    name=name,
                    table=compute_table_id(store.project, definition, False),
                    features=tuple(features),
                    decoders=tuple(
                        _DECODERS.get(dtypes[feature], _decode_any) for feature in features
                    ),
                )
            )
        if len(join_keys) != 1:
            raise ValueError(f"the features must share one join key, not {sorted(join_keys)}")
        self.join_key = join_keys.pop()
        self.names = [feature for view in views for feature in view.features]
        self._views = views
        config = store.config.online_store
        self._backend: _SqliteRead | _RedisRead | None = None
        if config.type == "sqlite":
            self._backend = _SqliteRead(store, views, sqlite_busy_seconds)
        elif config.type == "redis":
            self._backend = _RedisRead(store, views)

    def read(self, entity_id: str) -> dict[str, Any]:
        """``{join key: entity_id, feature: value or None, …}``."""
        if self._backend is None:
            return {name: values[0] for name, values in self.read_many([entity_id]).items()}
        return {self.join_key: entity_id, **self._backend(self._key(entity_id))}

    def read_many(self, entity_ids: Sequence[str]) -> dict[str, list[Any]]:
        """Like ``get_online_features(...).to_dict()`` for these entity rows."""
        if self._backend is None:
            rows = [{self.join_key: entity_id} for entity_id in entity_ids]
            response = self.store.get_online_features(features=self.refs, entity_rows=rows)
            return dict(response.to_dict())
        result: dict[str, list[Any]] = {self.join_key: list(entity_ids)}
        result.update({name: [] for name in self.names})
        keys = entity_keys(self.join_key, list(entity_ids)) if entity_ids else []
        for values in self._backend.many(keys):
            for name in self.names:
                result[name].append(values[name])
        return result

    def _key(self, entity_id: str) -> bytes:
        return entity_keys(self.join_key, [entity_id])[0]


class _SqliteRead:
    """All views in one statement; one read-only connection per thread.

    ``busy_seconds`` bounds how long a read waits for a lock. In WAL mode a reader never waits
    on materialize's write; a store still in rollback-journal mode (written before WAL was set,
    or left with a hot journal by a writer killed mid-transaction) would make readers wait
    SQLite's default five seconds, and then fail.
    """

    def __init__(self, store: FeatureStore, views: list[_View], busy_seconds: float) -> None:
        self.busy_seconds = busy_seconds
        path = Path(store.config.online_store.path)
        if not path.is_absolute():
            path = Path(store.config.repo_path or ".") / path
        self.path = path.resolve()
        self.uri = self.path.as_uri() + "?mode=ro"
        self.statement = " UNION ALL ".join(
            'SELECT {}, feature_name, value FROM "{}" WHERE entity_key = ?1'.format(
                number, view.table.replace('"', '""')
            )
            for number, view in enumerate(views)
        )
        self.decoders = [dict(zip(view.features, view.decoders, strict=True)) for view in views]
        self.empty = {feature: None for view in views for feature in view.features}
        self.local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.uri, uri=True, check_same_thread=False, timeout=self.busy_seconds
            )
            # Map the file: a read is then a few memory lookups instead of a read() per page.
            connection.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            self.local.connection = connection
        return connection

    def _recover(self) -> None:
        """Roll back what a killed writer left behind, so read-only readers can read again.

        A hot rollback journal needs a writable connection to be rolled back; a read-only
        connection fails on it ("attempt to write a readonly database") until someone does.
        Opening the file for writing once and setting WAL mode rolls it back (SQLite's own
        recovery) and keeps the store in the mode where readers never wait on writers.
        """
        connection = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
        stale = getattr(self.local, "connection", None)
        if stale is not None:
            stale.close()
            self.local.connection = None

    def __call__(self, key: bytes) -> dict[str, Any]:
        rows = self._execute(self.statement, (key,))
        values = dict(self.empty)
        for number, feature, raw in rows:
            decode = self.decoders[number].get(feature)
            if decode is not None:
                values[feature] = decode(raw)
        return values

    def many(self, keys: Sequence[bytes]) -> list[dict[str, Any]]:
        """Each key's values, in order. One statement per key: an indexed look-up in a mapped
        file costs microseconds, and one statement for many keys measured no faster (the values'
        decoding is the cost)."""
        return [self(key) for key in keys]

    def _execute(self, statement: str, parameters: Sequence[bytes]) -> list[Any]:
        try:
            return self._connection().execute(statement, parameters).fetchall()
        except sqlite3.OperationalError as error:
            if "readonly" not in str(error):
                raise
            log.warning("online store needs recovery after an interrupted write; recovering")
            self._recover()
            return self._connection().execute(statement, parameters).fetchall()


class _RedisRead:
    """One ``HMGET`` of the entity's hash: every view of an entity lives under the same key."""

    def __init__(self, store: FeatureStore, views: list[_View]) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        # The client Feast itself uses, built from the same connection string.
        online: Any = store._get_provider().online_store
        self.client = online._get_client(store.config.online_store)
        self.project = store.project.encode()
        self.fields: list[bytes] = []
        self.names: list[str] = []
        self.decoders: list[Callable[[bytes | None], Any]] = []
        for view in views:
            for feature, decoder in zip(view.features, view.decoders, strict=True):
                self.fields.append(_mmh3(f"{view.name}:{feature}"))
                self.names.append(feature)
                self.decoders.append(decoder)

    def __call__(self, key: bytes) -> dict[str, Any]:
        return self._decoded(self.client.hmget(key + self.project, self.fields))

    def many(self, keys: Sequence[bytes]) -> list[dict[str, Any]]:
        """Each key's values, in order: one ``HMGET`` per key, sent in one pipeline, one round trip
        per ``MANY_KEYS`` keys."""
        values: list[dict[str, Any]] = []
        for start in range(0, len(keys), MANY_KEYS):
            pipeline = self.client.pipeline(transaction=False)
            for key in keys[start : start + MANY_KEYS]:
                pipeline.hmget(key + self.project, self.fields)
            values.extend(self._decoded(raw_values) for raw_values in pipeline.execute())
        return values

    def _decoded(self, raw_values: Sequence[bytes | None]) -> dict[str, Any]:
        return {
            name: decode(raw)
            for name, decode, raw in zip(self.names, self.decoders, raw_values, strict=True)
        }


class _Response:
    def __init__(self, values: dict[str, list[Any]]) -> None:
        self._values = values

    def to_dict(self) -> dict[str, list[Any]]:
        return self._values


class OnlineFeatures:
    """A drop-in for ``FeatureStore.get_online_features(features, entity_rows).to_dict()``.

    Feature lists of regular feature views sharing one join key are read directly; anything else
    (feature services, on-demand views) goes to Feast.
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._readers: dict[tuple[str, ...], OnlineReader] = {}
        self._lock = threading.Lock()
        self._sqlite_busy_seconds = DEFAULT_SQLITE_BUSY_SECONDS

    def reader(self, refs: Sequence[str]) -> OnlineReader:
        key = tuple(refs)
        reader = self._readers.get(key)
        if reader is None:
            with self._lock:
                reader = self._readers.setdefault(
                    key, OnlineReader(self.store, refs, self._sqlite_busy_seconds)
                )
        return reader

    def bound_reads(self, timeout_seconds: float) -> bool:
        """Make the store itself give up on a read after ``timeout_seconds``.

        True when reads are bounded without a watchdog thread: Redis through socket timeouts on
        the client Feast uses, SQLite because a read-only WAL read of a local file never waits
        on a writer and any lock wait is cut at the timeout. False for other stores, whose
        callers must bound reads themselves. Call it before the first read.
        """
        config = self.store.config.online_store
        if config.type == "sqlite":
            self._sqlite_busy_seconds = timeout_seconds
            for reader in self._readers.values():
                if isinstance(reader._backend, _SqliteRead):
                    reader._backend.busy_seconds = timeout_seconds
            return True
        if config.type == "redis":
            online: Any = self.store._get_provider().online_store
            client = online._get_client(config)
            pool = getattr(client, "connection_pool", None)
            if pool is None:  # a cluster client: keep the caller's watchdog
                return False
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            pool.connection_kwargs["socket_timeout"] = timeout_seconds
            pool.connection_kwargs["socket_connect_timeout"] = timeout_seconds
            # One attempt per read: redis-py retries with backoff by default, and five reads from
            # a closed port then take seconds each instead of failing at once.
            client.set_retry(Retry(NoBackoff(), 0))
            pool.disconnect()  # connections made before now keep no timeout: drop them
            return True
        return False

    def get_online_features(self, features: Any, entity_rows: list[dict[str, Any]]) -> Any:
        if not isinstance(features, list) or any(":" not in ref for ref in features):
            return self.store.get_online_features(features=features, entity_rows=entity_rows)
        try:
            reader = self.reader(features)
        except FeaturesNotApplied:
            raise  # Feast would refuse them too, less plainly
        except ValueError:
            return self.store.get_online_features(features=features, entity_rows=entity_rows)
        ids = [str(row[reader.join_key]) for row in entity_rows]
        return _Response(reader.read_many(ids))


def read_online(store: FeatureStore, entity_id: str, refs: Sequence[str]) -> dict[str, Any]:
    """One entity's features, ``{join key: id, feature: value or None}``."""
    return OnlineReader(store, refs).read(entity_id)
