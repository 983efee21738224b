"""The bulk materialization writes exactly the bytes Feast itself would write."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from core.database import redis_connection_string, sqlalchemy_url
from features.materialize import (
    _sqlite_event_times,
    encode_column,
    encode_doubles,
    entity_keys,
    newest_rows,
)


def feast_bytes(values: Sequence[object], value_type: ValueType) -> list[bytes]:
    return [
        proto.SerializeToString()
        for proto in python_values_to_proto_values(list(values), value_type)
    ]


def test_doubles_serialise_like_feast_and_nan_is_null() -> None:
    values = [0.0, -1.5, 3.25, 1e300, -0.0, 5e-324, math.nan, 14.2]
    assert encode_doubles(np.array(values)) == feast_bytes(values, ValueType.DOUBLE)
    parsed = ValueProto()
    parsed.ParseFromString(encode_doubles(np.array([14.2]))[0])
    assert parsed.double_val == 14.2


def test_integers_and_strings_serialise_like_feast() -> None:
    numbers = pd.Series([0, 1, -3, 2**40, 1, 0], dtype="int64")
    assert encode_column(numbers, "Int64") == feast_bytes(numbers.tolist(), ValueType.INT64)
    texts = pd.Series(["PLAN_5GB", "", "Skåne", "PLAN_5GB", None], dtype=object)
    expected = [*feast_bytes(["PLAN_5GB", "", "Skåne", "PLAN_5GB"], ValueType.STRING), b""]
    assert encode_column(texts, "String") == expected


def test_entity_keys_serialise_like_feast() -> None:
    ids = ["C0000001", "Å-99", ""]
    expected = [
        serialize_entity_key(
            EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val=i)]),
            entity_key_serialization_version=3,
        )
        for i in ids
    ]
    assert entity_keys("customer_id", ids) == expected


def test_sqlite_event_times_are_what_feast_writes_whatever_the_unit() -> None:
    """Feast stores ``int(naive_utc.timestamp())``; feature tables hold microseconds, which were
    once divided as nanoseconds (every row dated January 1970)."""
    moments = [dt.datetime(2026, 5, 20, 12, 0, 30, 500, tzinfo=dt.UTC), dt.datetime(2024, 6, 1)]
    expected = [int(moment.replace(tzinfo=None).timestamp()) for moment in moments]
    for unit in ("s", "ms", "us", "ns"):
        times = pd.Series(pd.to_datetime(moments, utc=True)).dt.as_unit(unit)
        assert list(_sqlite_event_times(times)) == expected, unit


def test_newest_rows_take_the_newest_row_per_entity_in_the_interval(tmp_path: Path) -> None:
    def utc(text: str) -> pd.Timestamp:
        return pd.Timestamp(text, tz="UTC")

    frame = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B", "B", "C"],
            "event_timestamp": [
                utc("2026-01-01"),
                utc("2026-02-01"),
                utc("2026-03-01"),  # at the end: left for a later run
                utc("2026-02-01"),
                utc("2026-01-15"),
                utc("2025-12-01"),  # before the start
            ],
            "value": [1.0, 2.0, 3.0, 20.0, 10.0, 100.0],
        }
    )
    path = tmp_path / "view.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=2)
    newest, rows = newest_rows(
        path,
        "customer_id",
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    )
    assert rows == 4
    assert newest.set_index("customer_id")["value"].to_dict() == {"A": 2.0, "B": 20.0}


def test_redis_urls_become_feast_connection_strings() -> None:
    assert redis_connection_string("redis://127.0.0.1:6379/15") == "127.0.0.1:6379,db=15"
    assert redis_connection_string("redis://redis") == "redis:6379"
    assert (
        redis_connection_string("rediss://user:s%40cret@cache.example:6380/2")
        == "cache.example:6380,db=2,username=user,password=s@cret,ssl=true"
    )


def test_postgres_urls_use_the_installed_driver() -> None:
    assert sqlalchemy_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert sqlalchemy_url("postgres://u@h/db?sslmode=require") == (
        "postgresql+psycopg://u@h/db?sslmode=require"
    )
    # psycopg2 URLs written before the driver changed keep working, on psycopg 3.
    assert sqlalchemy_url("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("sqlite:///data/offers.db") == "sqlite:///data/offers.db"
