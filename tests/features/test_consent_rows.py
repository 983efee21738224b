"""Whole consent rows read and written directly: what Feast reads, before and after a write."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.settings import Settings
from features.consent_rows import ConsentRowWrite, OnlineConsentRows
from features.materialize import sqlite_path
from features.pipeline import build_features
from features.store import PROJECT, apply_repository, materialize, open_store
from features.views import CUSTOMER_CONSENT
from tests.factories.features import CATALOG_PATH, small_world, write_tables

pytestmark = pytest.mark.integration

END = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
CUSTOMERS = ["C1", "C2", "C3"]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Settings]]:
    overrides: dict[str, Any] = {}
    project = PROJECT
    if request.param == "redis":
        overrides["online_store"] = request.getfixturevalue("redis_url")
        project = f"consent_rows_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "raw",
        features_dir=tmp_path / "features",
        feast_dir=tmp_path / "feast",
        catalog=CATALOG_PATH,
        **overrides,
    )
    write_tables(small_world(), settings.data_dir)
    build_features(settings=settings)
    apply_repository(settings, project)
    materialize(END, settings, project=project, show_progress=False)
    opened = open_store(settings, project)
    try:
        yield opened, settings
    finally:
        if request.param == "redis":
            import redis

            client = redis.Redis.from_url(overrides["online_store"])
            for key in client.scan_iter(match=b"*" + project.encode()):
                client.delete(key)
            client.close()


def _feast_rows(store: Any) -> dict[str, Any]:
    """Feast's own reading: values and the event time of each customer's consent row."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    view = store.get_feature_view("customer_consent")
    keys = [
        EntityKey(join_keys=[CUSTOMER_KEY], entity_values=[Value(string_val=c)]) for c in CUSTOMERS
    ]
    answers = store._get_provider().online_read(store.config, view, keys)
    found = {}
    for customer, (moment, values) in zip(CUSTOMERS, answers, strict=True):
        decoded = {name: getattr(value, value.WhichOneof("val")) for name, value in values.items()}
        found[customer] = (decoded, moment)
    return found


def test_rows_read_are_what_feast_reads_with_the_feature_table_s_times(
    store: tuple[Any, Settings],
) -> None:
    opened, settings = store
    rows = OnlineConsentRows(opened, settings).read([*CUSTOMERS, "C-NEVER"])
    assert set(rows) == set(CUSTOMERS)  # a customer without a row is left out
    table = pd.read_parquet(Path(settings.features_dir) / "customer_consent.parquet")
    newest = table.groupby(CUSTOMER_KEY)[EVENT_TIMESTAMP].max()
    for customer, (values, moment) in _feast_rows(opened).items():
        assert rows[customer].values == {name: values[name] for name in CUSTOMER_CONSENT}
        assert rows[customer].event_time == moment == newest[customer].to_pydatetime()


def test_rows_written_are_read_back_by_feast(store: tuple[Any, Settings]) -> None:
    opened, settings = store
    rows = OnlineConsentRows(opened, settings)
    before = rows.read(["C2", "C3"])
    moment = dt.datetime(2026, 12, 1, 9, 30, 15, tzinfo=dt.UTC)
    changed = {**before["C2"].values, "consent_marketing": 0, "objected_marketing": 1}
    rows.write([ConsentRowWrite("C2", changed, moment)])
    after = _feast_rows(opened)
    assert after["C2"] == (changed, moment)
    # The other customers are untouched.
    assert after["C3"][0] == before["C3"].values
    assert rows.read(["C2"])["C2"].event_time == moment


def test_a_sqlite_write_gives_up_on_a_lock_within_the_timeout(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "raw",
        features_dir=tmp_path / "features",
        feast_dir=tmp_path / "feast",
        catalog=CATALOG_PATH,
    )
    write_tables(small_world(), settings.data_dir)
    build_features(settings=settings)
    apply_repository(settings)
    materialize(END, settings, show_progress=False)
    opened = open_store(settings)
    rows = OnlineConsentRows(opened, settings, timeout_seconds=0.05)
    current = rows.read(["C1"])["C1"]
    holder = sqlite3.connect(sqlite_path(opened), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer, as a materialize in progress
        started = time.perf_counter()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            rows.write([ConsentRowWrite("C1", current.values, END)])
        assert time.perf_counter() - started < 1.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
