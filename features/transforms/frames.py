"""The shape of every feature table: key, ``event_timestamp`` and the view's typed features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.columns import EVENT_TIMESTAMP
from features.views import FeatureType


def conform(
    columns: Mapping[str, Any], key: str, schema: Mapping[str, FeatureType]
) -> pd.DataFrame:
    """Key, ``event_timestamp`` (UTC) and the features in ``schema`` order with their types.

    ``columns`` is a frame or a mapping of equally long columns. Rows come out sorted by key and
    time; when one entity has two rows at the same instant the last one holds, as it would in the
    online store.
    """
    keys = np.asarray(columns[key], dtype=object)
    stamps = pd.DatetimeIndex(pd.to_datetime(columns[EVENT_TIMESTAMP], utc=True))
    data: dict[str, Any] = {}
    for name, kind in schema.items():
        values = columns[name]
        if kind == "float":
            data[name] = np.asarray(values, dtype=np.float64)
        elif kind == "int":
            numbers = np.asarray(values)
            if numbers.dtype.kind == "f" and np.isnan(numbers).any():
                raise ValueError(f"feature {name} has missing values but is an integer")
            data[name] = numbers.astype(np.int64, copy=False)
        else:
            texts = np.asarray(values, dtype=object)
            data[name] = np.where(pd.isna(texts), "", texts)
    codes, _ = pd.factorize(keys, sort=True)
    nanos = stamps.asi8
    order = np.lexsort((nanos, codes))
    if not (order == np.arange(len(order))).all():
        keys, stamps, codes, nanos = keys[order], stamps[order], codes[order], nanos[order]
        data = {name: values[order] for name, values in data.items()}
    # Keep the last row of each (key, time).
    last = np.r_[(codes[1:] != codes[:-1]) | (nanos[1:] != nanos[:-1]), True]
    if not last.all():
        keys, stamps = keys[last], stamps[last]
        data = {name: values[last] for name, values in data.items()}
    return pd.DataFrame({key: keys, EVENT_TIMESTAMP: stamps, **data})


def empty_table(key: str, schema: Mapping[str, FeatureType]) -> pd.DataFrame:
    """A feature table without rows, with the columns and types of a full one."""
    dtypes = {"float": np.float64, "int": np.int64, "str": object}
    columns: dict[str, Any] = {
        key: np.array([], dtype=object),
        EVENT_TIMESTAMP: pd.DatetimeIndex([], tz="UTC"),
    }
    for name, kind in schema.items():
        columns[name] = np.array([], dtype=dtypes[kind])
    return conform(columns, key, schema)
