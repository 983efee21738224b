"""Materialization: the newest feature values per entity into the online store, in bulk.

Feast's own ``materialize`` turns every value into a protobuf object one at a time and, on SQLite,
runs one ``INSERT`` per value: about 60 s for 200,000 customers × 30 features here, and our
customer views hold 99 features. This module writes the same thing the same way the online store
reads it — Feast's serialised entity key, one serialised ``ValueProto`` per feature, the event
time — but converts whole columns at once (a float column becomes its protobuf bytes with numpy)
and sends them in large statements (SQLite) or one ``HSET`` per entity (Redis). Any other online
store gets the converted rows through the provider's own ``online_write_batch``.

Like Feast, each run covers ``[start, end)`` per feature view, with ``start`` the end of the
previous run as recorded in the registry, and records the interval there again.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.columns import EVENT_TIMESTAMP
from core.settings import Settings
from features.views import RELOADED_WHOLE, WRITTEN_LAST

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

logger = logging.getLogger(__name__)

ENTITIES_PER_CHUNK = 20_000
_DOUBLE_TAG = 0x29  # ValueProto field 5 (double_val), wire type 1 (64-bit)
_STRING = 2  # feast ValueType.STRING, as written in serialised entity keys


@dataclass(frozen=True)
class ViewLoad:
    """What one feature view's materialization did."""

    view: str
    start: dt.datetime | None
    end: dt.datetime
    rows_read: int
    entities: int
    features: int
    seconds: float
    left_for_later: int = 0

    def describe(self) -> str:
        since = self.start.isoformat() if self.start else "the beginning"
        text = (
            f"{self.view}: {self.entities:,} entities × {self.features} features "
            f"({self.rows_read:,} rows from {since} to {self.end.isoformat()}) "
            f"in {self.seconds:.1f} s"
        )
        if self.left_for_later:
            text += f"; {self.left_for_later:,} rows dated after the end left for a later run"
        return text


@dataclass(frozen=True)
class MaterializeReport:
    online_store: str
    engine: str
    end: dt.datetime
    views: tuple[ViewLoad, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [f"materialized into {self.online_store} ({self.engine}) in {self.seconds:.1f} s"]
        lines += [f"  {load.describe()}" for load in self.views]
        return "\n".join(lines)


# --- reading the newest rows ------------------------------------------------------------------


def _utc(moment: dt.datetime) -> dt.datetime:
    """A naive time is read as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _time_filter(
    dataset: ds.Dataset, start: dt.datetime | None, end: dt.datetime | None, after: bool = False
) -> pc.Expression:
    column = ds.field(EVENT_TIMESTAMP)
    kind = dataset.schema.field(EVENT_TIMESTAMP).type

    def scalar(moment: dt.datetime) -> pa.Scalar:
        stamp = pd.Timestamp(moment)
        if getattr(kind, "tz", None) is None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return pa.scalar(stamp, type=kind)

    if after:
        assert end is not None
        return column >= scalar(end)
    condition = column < scalar(end) if end is not None else column.is_valid()
    if start is not None:
        condition = condition & (column >= scalar(start))
    return condition


def _newest_per_key(table: pa.Table, key: str) -> pa.Table:
    """The row with the greatest event time for each key (the last one on ties)."""
    if table.num_rows == 0:
        return table
    keys = table.column(key).combine_chunks()
    times = table.column(EVENT_TIMESTAMP).combine_chunks()
    if table.num_rows > 1:
        before, after = keys.slice(0, table.num_rows - 1), keys.slice(1)
        in_order = pc.or_(
            pc.less(before, after),
            pc.and_(
                pc.equal(before, after),
                pc.less_equal(times.slice(0, table.num_rows - 1), times.slice(1)),
            ),
        )
        # Feature tables are written sorted by key and time; anything else is sorted here.
        if not pc.all(in_order).as_py():
            order = pc.sort_indices(table, [(key, "ascending"), (EVENT_TIMESTAMP, "ascending")])
            table = table.take(order)
            keys = table.column(key).combine_chunks()
    changes = pc.not_equal(keys.slice(0, table.num_rows - 1), keys.slice(1))
    return table.filter(pa.concat_arrays([changes, pa.array([True])]))


def newest_rows(
    path: Path, key: str, start: dt.datetime | None, end: dt.datetime
) -> tuple[pd.DataFrame, int]:
    """The newest row per entity dated in ``[start, end)``, and how many rows were in range."""
    dataset = ds.dataset(path, format="parquet")
    parts: list[pa.Table] = []
    rows = 0
    # Reduce batch by batch so only about one row per entity is ever held at once.
    for batch in dataset.to_batches(filter=_time_filter(dataset, start, end), batch_size=1 << 18):
        rows += batch.num_rows
        if batch.num_rows:
            parts.append(_newest_per_key(pa.Table.from_batches([batch]), key))
    if not parts:
        empty = dataset.schema.empty_table().to_pandas()
        return empty, 0
    newest = _newest_per_key(pa.concat_tables(parts), key)
    return newest.to_pandas(split_blocks=True), rows


def rows_after(path: Path, end: dt.datetime) -> int:
    """Rows dated at or after ``end``: what a later run will pick up."""
    dataset = ds.dataset(path, format="parquet")
    return int(dataset.count_rows(filter=_time_filter(dataset, None, end, after=True)))


# --- converting to the online layout ----------------------------------------------------------


def entity_keys(join_key: str, values: Sequence[str]) -> list[bytes]:
    """Feast's serialised entity keys (version 3) for one string join key."""
    prefix = (
        struct.pack("<II", 1, _STRING)
        + struct.pack("<I", len(join_key.encode()))
        + (join_key.encode())
    )
    result = []
    for value in values:
        encoded = str(value).encode("utf8")
        result.append(prefix + struct.pack("<II", _STRING, len(encoded)) + encoded)
    return result


def encode_doubles(values: np.ndarray) -> list[bytes]:
    """Serialised ``ValueProto(double_val=v)`` per value; NaN becomes the empty (null) value."""
    numbers = np.ascontiguousarray(values, dtype="<f8")
    buffer = np.empty((len(numbers), 9), dtype=np.uint8)
    buffer[:, 0] = _DOUBLE_TAG
    buffer[:, 1:] = numbers.view(np.uint8).reshape(-1, 8)
    encoded: list[bytes] = buffer.view("V9").ravel().tolist()
    for position in np.flatnonzero(np.isnan(numbers)):
        encoded[position] = b""
    return encoded


def _encode_by_value(values: pd.Series, make: Callable[[Any], bytes]) -> list[bytes]:
    """Serialise each distinct value once; missing values become the empty (null) value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([make(value) for value in uniques] + [b""], dtype=object)
    return list(table[codes])  # the sentinel -1 picks the trailing b""


def encode_column(values: pd.Series, kind: str) -> list[bytes]:
    """One feature column as serialised ValueProtos, the way Feast would write it."""
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    if kind == "Float64":
        return encode_doubles(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
    if kind == "Int64":
        return _encode_by_value(
            values, lambda value: ValueProto(int64_val=int(value)).SerializeToString()
        )
    if kind == "String":
        return _encode_by_value(
            values, lambda value: ValueProto(string_val=str(value)).SerializeToString()
        )
    raise TypeError(f"no bulk encoding for feature type {kind}")


@dataclass(frozen=True)
class EncodedRows:
    """The newest rows of one feature view, ready for an online store."""

    view: FeatureView
    join_key: str
    ids: list[str]
    keys: list[bytes]
    names: list[str]
    values: np.ndarray  # object [entities, features] of serialised ValueProto bytes
    event_times: pd.Series  # UTC

    def __len__(self) -> int:
        return len(self.keys)


def encode_rows(view: FeatureView, frame: pd.DataFrame) -> EncodedRows:
    """Convert a frame of newest rows to serialised keys and values, column by column."""
    join_key = view.entity_columns[0].name
    names = [feature.name for feature in view.features]
    values = np.empty((len(frame), len(names)), dtype=object)
    for column, feature in enumerate(view.features):
        values[:, column] = encode_column(frame[feature.name], str(feature.dtype))
    ids = frame[join_key].astype(str).tolist()
    return EncodedRows(
        view=view,
        join_key=join_key,
        ids=ids,
        keys=entity_keys(join_key, ids),
        names=names,
        values=values,
        event_times=pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True).reset_index(drop=True),
    )


# --- writing ----------------------------------------------------------------------------------


Advance = Callable[[int], None]


class OnlineWriter(Protocol):
    def write(self, rows: EncodedRows, progress: Advance) -> None: ...


def _chunks(count: int) -> Iterator[slice]:
    for start in range(0, count, ENTITIES_PER_CHUNK):
        yield slice(start, min(start + ENTITIES_PER_CHUNK, count))


class SqliteWriter:
    """Feast's SQLite table per view: one row per (entity key, feature name).

    One statement per entity writes all its features: the entity key and time are bound once and
    the feature names are part of the statement, so each row costs one bound value.
    """

    def __init__(self, path: Path, project: str, busy_seconds: float = 60.0) -> None:
        self.path = path
        self.project = project
        # How long to wait for another writer's lock: a materialize waits out the API's
        # one-row consent writes, a consent write gives up within the request's timeout.
        self.busy_seconds = busy_seconds

    def write(self, rows: EncodedRows, progress: Advance) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        table = compute_table_id(self.project, rows.view, False).replace('"', '""')
        # ?1 is the entity key, ?2 the event time, ?3… the features in order.
        values = ",".join(
            "(?1,'{}',?{},?2)".format(name.replace("'", "''"), position + 3)
            for position, name in enumerate(rows.names)
        )
        statement = (
            f'INSERT INTO "{table}" (entity_key, feature_name, value, event_ts) VALUES {values} '
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = NULL, event_ts = excluded.event_ts, created_ts = NULL"
        )
        # Key order matches the primary key, so the B-tree grows at its end.
        order = np.argsort(np.array(rows.keys, dtype=object), kind="stable")
        keys = np.array(rows.keys, dtype=object)
        stamps = _sqlite_event_times(rows.event_times)
        connection = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        try:
            # Write-ahead log: the API's readers keep reading the last committed values while
            # this transaction writes, instead of waiting on its lock (kept in the file).
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("BEGIN IMMEDIATE")
            for part in _chunks(len(rows)):
                chosen = order[part]
                block = np.empty((len(chosen), len(rows.names) + 2), dtype=object)
                block[:, 0] = keys[chosen]
                block[:, 1] = stamps[chosen]
                block[:, 2:] = rows.values[chosen]
                connection.executemany(statement, block.tolist())
                progress(len(chosen))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()


# Feast's table keeps each value three times: in the rowid table, in its primary key's index and
# in an index on entity_key alone (four with the covering index this project added for reads).
# Declared WITHOUT ROWID, the table is its primary key's B-tree: each value is written once, in
# (entity key, feature name) order, so a customer's values lie in a few adjacent pages.
_COMPACT = "WITHOUT ROWID"


def entity_index(table: str) -> str:
    """The name of Feast's index on a view table's entity key."""
    return f"{table}_ek"


def compact_table(store: FeatureStore, view: FeatureView, busy_seconds: float = 60.0) -> None:
    """Keep a view's SQLite table in the compact layout.

    Feast's apply creates the table (``CREATE TABLE IF NOT EXISTS``) and an index on entity_key
    (``CREATE INDEX IF NOT EXISTS``). A table of Feast's layout is rewritten here, rows and all,
    in one transaction (readers keep the committed rows until it commits), as the same columns
    and primary key WITHOUT ROWID; that drops its indexes, and the index on entity_key is
    recreated empty (``WHERE 0``): the primary key starts with entity_key, so the full index
    would only duplicate it, and an index of that name keeps Feast's later applies from building
    it again. ``offers features apply`` makes a new store's empty tables compact; a store of an
    earlier release is rewritten once, at its next materialize. Feast reads and writes the table
    with the same statements (its vector and text search, which read ``rowid``, are not used).
    """
    from feast.infra.online_stores.helpers import compute_table_id

    table = compute_table_id(store.project, view, False)
    connection = sqlite3.connect(sqlite_path(store), timeout=busy_seconds, isolation_level=None)
    try:
        layout = _layout(connection, table)
        if layout is None or layout == (True, True):
            return
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("BEGIN IMMEDIATE")
        copied = 0
        try:
            # Again under the write lock: another materialize may have rewritten it meanwhile.
            layout = _layout(connection, table)
            if layout is None or layout == (True, True):
                connection.execute("ROLLBACK")
                return
            if not layout[0]:
                copied = _rewrite_compact(connection, table)
            connection.execute(f"DROP INDEX IF EXISTS {_quoted(entity_index(table))}")
            connection.execute(
                f"CREATE INDEX {_quoted(entity_index(table))} ON {_quoted(table)} "
                "(entity_key) WHERE 0"
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if copied:
            logger.info("rewrote online table %s without rowid (%d rows)", table, copied)
    finally:
        connection.close()


def _layout(connection: sqlite3.Connection, table: str) -> tuple[bool, bool] | None:
    """Whether ``table`` is WITHOUT ROWID and its entity-key index the empty one; None when
    there is no such table."""
    found = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if found is None:
        return None
    index = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (entity_index(table),)
    ).fetchone()
    empty_index = index is not None and str(index[0]).rstrip().upper().endswith("WHERE 0")
    return str(found[0]).rstrip().upper().endswith(_COMPACT), empty_index


def _rewrite_compact(connection: sqlite3.Connection, table: str) -> int:
    """Copy ``table`` into a WITHOUT ROWID table of the same columns and primary key, then put
    the copy in its place (inside the caller's transaction); returns the rows copied."""
    columns = connection.execute(f"PRAGMA table_info({_quoted(table)})").fetchall()
    # (cid, name, type, notnull, default, pk): the primary key's columns in their key order.
    key = [row[1] for row in sorted((row for row in columns if row[5]), key=lambda row: row[5])]
    if not key:
        raise ValueError(f"online table {table} has no primary key to order its rows by")
    names = [row[1] for row in columns]
    definitions = ", ".join(f"{_quoted(row[1])} {row[2]}".rstrip() for row in columns)
    listed = ", ".join(_quoted(name) for name in names)
    ordered = ", ".join(_quoted(name) for name in key)
    copy = f"{table}__compact"
    connection.execute(f"DROP TABLE IF EXISTS {_quoted(copy)}")
    connection.execute(
        f"CREATE TABLE {_quoted(copy)} ({definitions}, PRIMARY KEY({ordered})) {_COMPACT}"
    )
    # A rowid table's key may hold NULLs, which no read can ask for and a WITHOUT ROWID key
    # refuses; neither Feast nor this project writes them, and they are not copied.
    present = " AND ".join(f"{_quoted(name)} IS NOT NULL" for name in key)
    copied = connection.execute(
        f"INSERT INTO {_quoted(copy)} ({listed}) "
        f"SELECT {listed} FROM {_quoted(table)} WHERE {present} ORDER BY {ordered}"
    ).rowcount
    connection.execute(f"DROP TABLE {_quoted(table)}")
    connection.execute(f"ALTER TABLE {_quoted(copy)} RENAME TO {_quoted(table)}")
    return copied


def _quoted(identifier: str) -> str:
    return '"{}"'.format(identifier.replace('"', '""'))


def _sqlite_event_times(times: pd.Series) -> np.ndarray:
    """Event times as Feast's SQLite store writes them: ``int(naive_utc.timestamp())``.

    Python reads a naive time as local time, so on a machine whose zone is not UTC the number
    is shifted by the zone's offset, and Feast's reader shifts it back; match it exactly.
    """
    # In nanoseconds whatever the column's unit: feature tables hold microseconds, and their
    # integers divided as nanoseconds would date every row in January 1970.
    utc = pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns")
    if time.timezone == 0 and time.altzone == 0:
        return np.asarray(utc.asi8 // 1_000_000_000, dtype=object)
    codes, uniques = pd.factorize(utc)
    seconds = [int(moment.tz_localize(None).to_pydatetime().timestamp()) for moment in uniques]
    return np.array(seconds, dtype=object)[codes]


class RedisWriter:
    """Feast's Redis layout: one hash per entity and project, a field per feature and a time."""

    def __init__(self, url: str, project: str, client: Any = None) -> None:
        """``client``: an open Redis client to write with (its timeouts apply), kept open;
        without one, a client of ``url`` is opened for each write and closed after it."""
        self.url = url
        self.project = project
        self.client = client

    def write(self, rows: EncodedRows, progress: Advance) -> None:
        import redis
        from feast.infra.online_stores.helpers import _mmh3
        from google.protobuf.timestamp_pb2 import Timestamp

        fields = np.array([_mmh3(f"{rows.view.name}:{name}") for name in rows.names], dtype=object)
        time_field = f"_ts:{rows.view.name}".encode()
        codes, uniques = pd.factorize(rows.event_times)
        stamps = np.array(
            [_timestamp_bytes(Timestamp, moment) for moment in uniques], dtype=object
        )[codes]
        project = self.project.encode()
        width = 2 * len(fields) + 2
        client = self.client if self.client is not None else redis.Redis.from_url(self.url)
        try:
            for part in _chunks(len(rows)):
                block = np.empty((part.stop - part.start, width), dtype=object)
                block[:, 0 : width - 2 : 2] = fields[None, :]
                block[:, 1 : width - 2 : 2] = rows.values[part]
                block[:, width - 2] = time_field
                block[:, width - 1] = stamps[part]
                with client.pipeline(transaction=False) as pipe:
                    for key, arguments in zip(rows.keys[part], block.tolist(), strict=True):
                        pipe.execute_command("HSET", key + project, *arguments)
                    pipe.execute()
                progress(part.stop - part.start)
        finally:
            if client is not self.client:
                client.close()


def _timestamp_bytes(timestamp_type: Any, moment: pd.Timestamp) -> bytes:
    nanos = int(pd.Timestamp(moment).value)
    stamp = timestamp_type(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)
    return bytes(stamp.SerializeToString())


class ProviderWriter:
    """Any other online store: the provider's ``online_write_batch`` with converted rows."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def write(self, rows: EncodedRows, progress: Advance) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        provider = self.store._get_provider()
        for part in _chunks(len(rows)):
            data: list[tuple[Any, dict[str, Any], dt.datetime, dt.datetime | None]] = []
            for position in range(part.start, part.stop):
                values = {}
                for column, name in enumerate(rows.names):
                    value = ValueProto()
                    value.ParseFromString(rows.values[position, column])
                    values[name] = value
                key = EntityKeyProto(
                    join_keys=[rows.join_key],
                    entity_values=[ValueProto(string_val=rows.ids[position])],
                )
                data.append((key, values, rows.event_times[position].to_pydatetime(), None))
            provider.online_write_batch(self.store.config, rows.view, data, progress=None)
            progress(part.stop - part.start)


def online_writer(
    store: FeatureStore,
    settings: Settings,
    *,
    busy_seconds: float = 60.0,
    redis_client: Any = None,
) -> OnlineWriter:
    """The writer of the store's online layout: materialize's, and the consent path's.

    ``busy_seconds`` bounds a SQLite write's wait for another writer's lock; ``redis_client``
    is an open client to write Redis with (its socket timeouts then bound the write).
    """
    config = store.config.online_store
    if config.type == "sqlite":
        return SqliteWriter(sqlite_path(store), store.project, busy_seconds)
    if config.type == "redis" and settings.online_store.startswith(("redis://", "rediss://")):
        return RedisWriter(settings.online_store, store.project, redis_client)
    return ProviderWriter(store)


def sqlite_path(store: FeatureStore) -> Path:
    """The SQLite online store's file, resolved like Feast resolves it."""
    path = Path(store.config.online_store.path)
    if not path.is_absolute():
        path = Path(store.config.repo_path or ".") / path
    return path


# --- the run ----------------------------------------------------------------------------------


def source_path(store: FeatureStore, view: FeatureView) -> Path:
    """The Parquet feature table behind a view, resolved like Feast resolves it."""
    source = view.batch_source
    path = Path(getattr(source, "path", "") or "")
    if not str(path):
        raise ValueError(f"feature view {view.name} has no file path to read from")
    if not path.is_absolute():
        path = Path(store.config.repo_path or ".") / path
    return path


def lacking_columns_problem(path: Path, columns: Iterable[str]) -> str | None:
    """What is wrong with a feature table that lacks some of ``columns`` (built by an earlier
    release), or None when it holds them all. Reads the Parquet schema only."""
    present = set(ds.dataset(path, format="parquet").schema.names)
    lacking = [name for name in columns if name not in present]
    if not lacking:
        return None
    return (
        f"feature table {path} lacks {', '.join(lacking)}: it was built by an earlier release; "
        "run `offers features build` again"
    )


@contextmanager
def _progress(show: bool) -> Iterator[Callable[[str, int], Advance]]:
    """A rich progress bar on stderr, or nothing."""
    if not show:
        yield lambda description, total: lambda advance: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:

        def task(description: str, total: int) -> Advance:
            task_id = bar.add_task(description, total=max(total, 1))
            if total == 0:
                bar.update(task_id, completed=1)
            return lambda advance: bar.advance(task_id, advance)

        yield task


# Beside the registry: the online store's rows may be older than the feature tables' history, so
# the next materialize reloads every view from the beginning (the file says why).
WHOLE_RELOAD_FILE = "reload-whole"


def request_whole_reload(settings: Settings, reason: str) -> None:
    """Make the next materialize reload every view from the beginning.

    An incremental materialize loads only rows dated after the last one's end: a history that
    changed before it (another world simulated into the same folder, a customer erased from the
    online store while the tables still hold them) would otherwise never reach the store.
    """
    folder = Path(settings.feast_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WHOLE_RELOAD_FILE).write_text(reason.strip() + "\n")


# In an input-table folder: its tables are a new world, not the old history grown. The next
# features build over them asks the next materialize for a whole reload (and removes this file),
# so a materialize run between the two does not use the request up on the old tables.
NEW_HISTORY_FILE = ".new-history"


def mark_new_history(data_dir: Path, reason: str) -> None:
    """Say that the input tables in ``data_dir`` replace their history (another world)."""
    (Path(data_dir) / NEW_HISTORY_FILE).write_text(reason.strip() + "\n")


def pass_on_new_history(data_dir: Path, settings: Settings) -> None:
    """After the feature tables were built from ``data_dir``: a new history there becomes a whole
    reload of the online store at the next materialize."""
    marker = Path(data_dir) / NEW_HISTORY_FILE
    if marker.exists():
        request_whole_reload(settings, marker.read_text())
        marker.unlink(missing_ok=True)


def whole_reload_requested(settings: Settings) -> str | None:
    """Why the next materialize reloads every view whole, or None."""
    path = Path(settings.feast_dir) / WHOLE_RELOAD_FILE
    return path.read_text().strip() if path.exists() else None


def materialize_views(
    store: FeatureStore,
    settings: Settings,
    *,
    end: dt.datetime | None = None,
    views: list[str] | None = None,
    engine: Literal["bulk", "feast"] = "bulk",
    show_progress: bool = True,
    whole: bool = False,
) -> MaterializeReport:
    """Materialize the named feature views (all when None) up to ``end`` (now when None):
    each from its last materialized end, or from the beginning with ``whole`` or when a whole
    reload was requested (:func:`request_whole_reload`; done once every view is loaded)."""
    started = time.perf_counter()
    requested = whole_reload_requested(settings)
    if requested is not None:
        logger.info("reloading every view from the beginning: %s", requested)
    whole = whole or requested is not None
    end = _utc(end) if end is not None else dt.datetime.now(dt.UTC)
    chosen = [
        view
        for view in store.list_feature_views()
        if view.online and (views is None or view.name in views)
    ]
    if views is not None:
        unknown = sorted(set(views) - {view.name for view in chosen})
        if unknown:
            raise ValueError(f"unknown feature views {unknown}; run `offers features apply`")
    if not chosen:
        raise ValueError("no feature views are registered; run `offers features apply` first")
    # The views reloaded whole go last but one: a reload of the consent view undoes the consent
    # changes made through the API until `offers consents sync` applies them again, and run late,
    # that lasts from its commit to the sync's, not through the loads of the other views as well.
    # The offers' attributes (a catalog's few rows) come after it: readiness reads them, so a
    # first run stopped before its end leaves the store not ready.
    chosen.sort(key=lambda view: (view.name == WRITTEN_LAST, view.name in RELOADED_WHOLE))
    writer = online_writer(store, settings)
    loads: list[ViewLoad] = []
    with _progress(show_progress) as task:
        for view in chosen:
            if store.config.online_store.type == "sqlite":
                compact_table(store, view)
            loads.append(_materialize_view(store, view, end, engine, writer, task, whole))
    if requested is not None and views is None and whole_reload_requested(settings) == requested:
        # Done; a request made while this run loaded (another reason) stays for the next run.
        (Path(settings.feast_dir) / WHOLE_RELOAD_FILE).unlink(missing_ok=True)
    report = MaterializeReport(
        online_store=store.config.online_store.type,
        engine=engine,
        end=end,
        views=tuple(loads),
        seconds=time.perf_counter() - started,
    )
    logger.info("%s", report.describe())
    later = sum(load.left_for_later for load in loads)
    if later:
        logger.warning(
            "%d feature rows are dated at or after %s and were not loaded; they will be on the "
            "next run after that time (or pass --end)",
            later,
            end.isoformat(),
        )
    return report


def _materialize_view(
    store: FeatureStore,
    view: FeatureView,
    end: dt.datetime,
    engine: str,
    writer: OnlineWriter,
    task: Callable[[str, int], Advance],
    whole: bool = False,
) -> ViewLoad:
    view_started = time.perf_counter()
    start = view.most_recent_end_time
    start = _utc(start) if start is not None else None
    if view.name in RELOADED_WHOLE or whole:
        start = None
    path = source_path(store, view)
    if not path.exists():
        raise ValueError(f"{path}: feature table not found; run `offers features build` first")
    problem = lacking_columns_problem(path, (feature.name for feature in view.features))
    if problem is not None:
        raise ValueError(problem)
    left = rows_after(path, end)
    if start is not None and start >= end:
        task(view.name, 0)
        return ViewLoad(view.name, start, end, 0, 0, len(view.features), 0.0, left)
    if engine == "feast":
        rows, entities = _feast_materialize(store, view, path, start, end, task)
    else:
        frame, rows = newest_rows(path, view.entity_columns[0].name, start, end)
        encoded = encode_rows(view, frame)
        advance = task(view.name, len(encoded))
        if len(encoded):
            writer.write(encoded, advance)
        first = frame[EVENT_TIMESTAMP].min() if len(frame) else None
        interval_start = start or (first.to_pydatetime() if first is not None else end)
        store.registry.apply_materialization(view, store.project, interval_start, end, commit=True)
        entities = len(encoded)
    return ViewLoad(
        view.name,
        start,
        end,
        rows,
        entities,
        len(view.features),
        time.perf_counter() - view_started,
        left,
    )


def _feast_materialize(
    store: FeatureStore,
    view: FeatureView,
    path: Path,
    start: dt.datetime | None,
    end: dt.datetime,
    task: Callable[[str, int], Advance],
) -> tuple[int, int]:
    """Feast's own materialize over the same interval, for comparison."""
    dataset = ds.dataset(path, format="parquet")
    selected = dataset.to_table(
        columns=[view.entity_columns[0].name, EVENT_TIMESTAMP],
        filter=_time_filter(dataset, start, end),
    )
    if selected.num_rows == 0:
        task(view.name, 0)
        return 0, 0
    entities = len(pc.unique(selected.column(0)))
    advance = task(view.name, entities)
    first = pd.Timestamp(pc.min(selected.column(EVENT_TIMESTAMP)).as_py()).to_pydatetime()
    store.materialize(start_date=start or _utc(first), end_date=end, feature_views=[view.name])
    advance(entities)
    return selected.num_rows, entities
