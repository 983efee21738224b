"""``offers features build``: input tables in, Parquet feature tables out.

The I/O edge around :mod:`features.transforms`: check the input against the contract, read it,
build every feature table and write it. Customer tables are built for a slice of customers at a
time (every feature of a customer depends only on that customer's rows), which keeps memory flat
for large worlds. Each table is written to a temporary file first and all of them are renamed
into place at the end, so a failed build leaves the previous tables as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.catalog import load_catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP, OFFER_KEY
from core.files import replacing
from core.settings import Settings, get_settings
from core.tables import read_tables
from core.validation import require_valid
from features.materialize import pass_on_new_history
from features.transforms import FEATURE_TABLES, data_end, data_start
from features.views import FEATURE_VIEWS, FeatureType, feature_table_path

logger = logging.getLogger(__name__)

CUSTOMERS_PER_SLICE = 50_000
_ARROW_TYPES: dict[FeatureType, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "str": pa.string(),
}


def arrow_schema(view: str) -> pa.Schema:
    """The Parquet schema of a feature table: key, event time (UTC) and the view's features."""
    key = OFFER_KEY if view == "offer_attributes" else CUSTOMER_KEY
    return pa.schema(
        [
            pa.field(key, pa.string(), nullable=False),
            pa.field(EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
            *(pa.field(name, _ARROW_TYPES[kind]) for name, kind in FEATURE_VIEWS[view].items()),
        ]
    )


def _write(view: str, frames: Iterator[pd.DataFrame], path: Path) -> int:
    """Write the frames, in order, as one Parquet file; returns the number of rows."""
    schema = arrow_schema(view)
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for frame in frames:
            writer.write_table(
                pa.Table.from_pandas(frame, schema=schema, preserve_index=False),
                row_group_size=256_000,
            )
            rows += len(frame)
    return rows


def write_feature_tables(frames: Mapping[str, pd.DataFrame], features_dir: Path) -> dict[str, Path]:
    """Write each feature table as ``<features_dir>/<view>.parquet``, replacing it whole."""
    features_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for view, frame in frames.items():
        path = feature_table_path(view, features_dir)
        with replacing(path) as (temporary,):
            _write(view, iter([frame]), temporary)
        written[view] = path
    return written


def _customer_slices(
    tables: Mapping[str, pd.DataFrame], size: int
) -> tuple[int, dict[str, np.ndarray]]:
    """How many slices of ``size`` customers, and each table row's slice (by sorted id)."""
    ids = pd.Index(np.sort(tables["customers"][CUSTOMER_KEY].unique()))
    slices = {
        name: ids.get_indexer(pd.Index(table[CUSTOMER_KEY])) // size
        for name, table in tables.items()
        if CUSTOMER_KEY in table.columns
    }
    return max(1, -(-len(ids) // size)), slices


def build_features(
    data_dir: Path | None = None,
    settings: Settings | None = None,
    features_dir: Path | None = None,
    customers_per_slice: int = CUSTOMERS_PER_SLICE,
    *,
    check: bool = True,
) -> dict[str, Path]:
    """Check and read the input tables, build the feature tables and write them.

    Returns the Parquet file of each feature view. Raises ``ContractError`` or ``CatalogError``
    (both ``ValueError``) naming the file at fault before anything is written. ``check=False``
    is for a caller that has just validated the same tables (the retrain pipeline).
    """
    settings = settings or get_settings()
    source = Path(data_dir or settings.data_dir)
    target = Path(features_dir or settings.features_dir)
    started = time.perf_counter()
    catalog = load_catalog(settings.catalog)
    if check:
        require_valid(source, catalog, remember_in=target, create_folder=True)
    checked = time.perf_counter()
    tables = read_tables(source)
    start, end = data_start(tables), data_end(tables)
    count, slice_of = _customer_slices(tables, customers_per_slice)
    read = time.perf_counter()

    def frames(view: str) -> Iterator[pd.DataFrame]:
        needed, build = FEATURE_TABLES[view]
        if not needed:
            yield build(tables, catalog, start, end)
            return
        for number in range(count):
            part = {name: tables[name][slice_of[name] == number] for name in needed}
            yield build(part, catalog, start, end)

    target.mkdir(parents=True, exist_ok=True)
    paths = {view: feature_table_path(view, target) for view in FEATURE_TABLES}
    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    # All tables or none: a failure in the last view leaves every old table in place.
    with replacing(*paths.values()) as temporaries:
        for view, temporary in zip(FEATURE_TABLES, temporaries, strict=True):
            view_started = time.perf_counter()
            rows[view] = _write(view, frames(view), temporary)
            seconds[view] = time.perf_counter() - view_started
    logger.info(
        "feature tables in %s: %s (checked in %.1f s, read in %.1f s, built in %.1f s)",
        target,
        ", ".join(f"{view} {rows[view]:,} rows in {seconds[view]:.1f} s" for view in rows),
        checked - started,
        read - checked,
        time.perf_counter() - read,
    )
    pass_on_new_history(source, settings)
    return paths
