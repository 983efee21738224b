"""Features as of each labelled row: the point-in-time join of the built feature tables.

For each entity row and view, the newest feature row dated at or before the row's time and not
older than the view's TTL (Feast's semantics, keys and TTLs from :mod:`features.views`), read from
the Parquet tables ``features build`` writes; or, on request, from Feast's offline store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from core.columns import EVENT_TIMESTAMP
from core.settings import Settings
from features.views import SERVICE_VIEWS, feature_table_path, view_key, view_ttl

# Extra columns read beside each model's inputs, for slices and the consent groups.
SLICE_VIEWS = ("customer_consent",)

# (``contract_ended_on`` for the eligibility rules an evaluation applies; no model reads it.)
_KEEP_STRINGS = frozenset({"segment", "current_plan_id", "binding_end_date", "contract_ended_on"})


def join_ttl(view: str) -> pd.Timedelta | None:
    """The view's TTL (None = unlimited) as the pandas join applies it, so it drops what Feast
    drops."""
    ttl = view_ttl(view)
    return None if ttl is None else pd.Timedelta(ttl)


def _utc_instants(times: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC ``datetime64[ns]`` (fast to sort and compare; naive = UTC)."""
    values = pd.to_datetime(times, utc=True)
    return values.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _arrow_instants(column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        column = pc.assume_timezone(column, "UTC")
    stamps = pc.cast(column, pa.timestamp("ns", tz="UTC"))
    return np.asarray(stamps.to_numpy(zero_copy_only=False)).astype("datetime64[ns]")


def _latest_rows(
    left_codes: np.ndarray,
    left_times: np.ndarray,
    right_codes: np.ndarray,
    right_times: np.ndarray,
) -> np.ndarray:
    """For each left row, the right row with the same code and the newest time at or before the
    left row's time; -1 when there is none. Codes below zero never match."""
    valid = right_codes >= 0
    positions = np.flatnonzero(valid)
    times = right_times[valid].view(np.int64)
    codes = right_codes[valid].astype(np.int64)
    ranks = np.unique(times)
    span = len(ranks) + 1
    # One sortable number per (code, time): a binary search finds the newest time not after t.
    composite = codes * span + np.searchsorted(ranks, times)
    order = np.argsort(composite, kind="stable")
    composite = composite[order]
    wanted = left_codes.astype(np.int64) * span + np.searchsorted(
        ranks, left_times.view(np.int64), side="right"
    )
    # The last entry strictly below (code, first rank after t): the newest time not after t.
    found = np.searchsorted(composite, wanted, side="left") - 1
    inside = found >= 0
    same_code = np.zeros(len(left_codes), dtype=bool)
    same_code[inside] = composite[found[inside]] // span == left_codes[inside]
    same_code &= left_codes >= 0
    return np.where(same_code, positions[order[np.clip(found, 0, None)]], -1)


def point_in_time_join(
    entities: pd.DataFrame,
    tables: Mapping[str, Any],
    ttls: Mapping[str, pd.Timedelta | None] | None = None,
) -> pd.DataFrame:
    """Feast's point-in-time semantics: for each entity row and view, the newest feature row
    with ``event_timestamp`` at or before the row's, and not older than the view's TTL; no such
    row gives missing values. Numeric features come back as float32 (NaN = missing).

    ``tables`` holds pandas frames or Arrow tables (key, ``event_timestamp``, features), or
    functions that read one: each is then read only when its turn comes and let go after it, so
    only one feature table is in memory at a time.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    result = entities.reset_index(drop=True)
    left_times = _utc_instants(result[EVENT_TIMESTAMP])
    added: dict[str, Any] = {}
    for view, source in tables.items():
        loaded = source() if callable(source) else source
        table = (
            loaded
            if isinstance(loaded, pa.Table)
            else pa.Table.from_pandas(loaded, preserve_index=False)
        )
        del loaded
        key = view_key(view)
        keys = pa.array(result[key].astype(str).to_numpy(dtype=object), type=pa.string())
        value_set = pc.unique(keys)
        left_codes = pc.fill_null(pc.index_in(keys, value_set=value_set), -1).to_numpy()
        right_keys = table.column(key)
        if pa.types.is_dictionary(right_keys.type):
            right_keys = pc.cast(right_keys, pa.string())
        right_codes = pc.fill_null(pc.index_in(right_keys, value_set=value_set), -1).to_numpy()
        right_times = _arrow_instants(table.column(EVENT_TIMESTAMP))
        rows = _latest_rows(left_codes, left_times, np.asarray(right_codes), right_times)
        ttl = (ttls or {}).get(view)
        if ttl is not None:
            matched = rows >= 0
            age = np.zeros(len(rows), dtype="timedelta64[ns]")
            age[matched] = left_times[matched] - right_times[rows[matched]]
            rows = np.where(matched & (age > ttl.to_timedelta64()), -1, rows)
        take = pa.array(np.clip(rows, 0, None), mask=rows < 0)
        for name in table.column_names:
            if name in (key, EVENT_TIMESTAMP) or name in result.columns or name in added:
                continue
            column = table.column(name)
            if name in _KEEP_STRINGS:
                added[name] = column.take(take).to_pandas().to_numpy(dtype=object)
            elif (
                pa.types.is_integer(column.type)
                or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)
            ):
                values = pc.cast(column.take(take), pa.float32())
                added[name] = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
        del table
    return pd.concat([result, pd.DataFrame(added, index=result.index)], axis=1)


def read_feature_table(settings: Settings, view: str) -> Any:
    """One built feature table as an Arrow table, without string columns no model input needs."""
    import pyarrow.parquet as pq

    path = feature_table_path(view, settings.features_dir)
    if not path.exists():
        raise FileNotFoundError(f"feature table {path} not found; run `offers features build`")
    key = view_key(view)
    columns = [
        field.name
        for field in pq.read_schema(path)
        if field.name in (key, EVENT_TIMESTAMP)
        or field.name in _KEEP_STRINGS
        or not (
            str(field.type) in ("string", "large_string")
            or str(field.type).startswith("dictionary")
        )
    ]
    return pq.read_table(path, columns=columns)


def read_feature_tables(settings: Settings, views: Sequence[str]) -> dict[str, Any]:
    """Readers of the built feature tables, one per view, for :func:`point_in_time_join`."""
    for view in views:
        path = feature_table_path(view, settings.features_dir)
        if not path.exists():
            raise FileNotFoundError(f"feature table {path} not found; run `offers features build`")
    return {view: partial(read_feature_table, settings, view) for view in views}


def add_plan_fit(frame: pd.DataFrame) -> pd.DataFrame:
    """The plan-fit columns (the on-demand view's outputs) from the joined features."""
    from core.plan_fit import PLAN_FIT_INPUTS, plan_fit

    inputs = frame[list(PLAN_FIT_INPUTS)].astype(float)
    fit = plan_fit(inputs)
    for name in fit.columns:
        frame[name] = fit[name].to_numpy(dtype=np.float32)
    return frame


def join_features(
    entities: pd.DataFrame,
    feature_service: str,
    settings: Settings,
    method: str = "tables",
) -> pd.DataFrame:
    """Entity rows with their point-in-time features, the consent view and plan fit.

    ``method`` "tables" joins the built feature tables with pandas; "feast" asks Feast's offline
    store (``features.training_frame.historical_features``). Both follow Feast's semantics.
    """
    views = SERVICE_VIEWS[feature_service]
    if method == "feast":
        from features.training_frame import historical_features

        joined = historical_features(entities, feature_service, settings).reset_index(drop=True)
        consent = point_in_time_join(
            entities.reset_index(drop=True),
            read_feature_tables(settings, SLICE_VIEWS),
            {view: join_ttl(view) for view in SLICE_VIEWS},
        )
        for name in consent.columns.difference(joined.columns):
            joined[name] = consent[name].to_numpy()
    elif method == "tables":
        all_views = (*views, *SLICE_VIEWS)
        joined = point_in_time_join(
            entities,
            read_feature_tables(settings, all_views),
            {view: join_ttl(view) for view in all_views},
        )
    else:
        raise ValueError(f"unknown join method {method!r}: 'tables' or 'feast'")
    if "offer_attributes" in views and "fit_saving_sek_per_month" not in joined:
        joined = add_plan_fit(joined)
    return joined
