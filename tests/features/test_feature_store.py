"""The Feast repository end to end on a hand-made world: build, apply, materialize, read.

Three customers over six months (see ``tests.factories.features.small_world``), so every value
read back can be checked by hand.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP, OFFER_KEY
from core.database import sqlalchemy_url
from core.settings import Settings
from features.materialize import MaterializeReport, request_whole_reload, whole_reload_requested
from features.pipeline import build_features
from features.store import apply_repository, materialize, open_store, repo_config
from features.training_frame import historical_features, historical_features_by_ref
from features.views import FEATURE_VIEWS
from tests.factories.features import CATALOG_PATH, small_world, write_tables

pytestmark = pytest.mark.integration

END = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
CUSTOMERS = ["C1", "C2", "C3"]
CUSTOMER_VIEWS = [view for view in FEATURE_VIEWS if view != "offer_attributes"]
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Repo:
    root: Path
    settings: Settings
    tables: dict[str, Path]
    report: MaterializeReport


def settings_for(root: Path, raw: Path, features: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=raw,
        features_dir=features,
        feast_dir=root / "feast",
        catalog=CATALOG_PATH,
        **overrides,
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """The small world built, applied and materialized into SQLite."""
    root = tmp_path_factory.mktemp("feature-store")
    raw = write_tables(small_world(), root / "raw")
    settings = settings_for(root, raw, root / "features")
    tables = build_features(settings=settings)
    apply_repository(settings)
    report = materialize(END, settings, show_progress=False)
    return Repo(root, settings, tables, report)


def fresh_store_settings(repo: Repo, name: str, **overrides: Any) -> Settings:
    """Another registry and online store over the same feature tables."""
    root = repo.root / name
    return settings_for(root, repo.settings.data_dir, repo.settings.features_dir, **overrides)


def materialized_world_of_its_own(
    repo: Repo, name: str, folder: Path
) -> tuple[Settings, dict[str, pd.DataFrame], Path]:
    """The small world in its own input and feature tables (``folder``) and its own store,
    built, applied and materialized up to END: a test may change its tables."""
    world = small_world()
    raw = write_tables(world, folder / "raw")
    settings = settings_for(
        fresh_store_settings(repo, name).feast_dir.parent, raw, folder / "features"
    )
    build_features(settings=settings)
    apply_repository(settings)
    materialize(END, settings, show_progress=False)
    return settings, world, raw


def plain(value: Any) -> Any:
    """NaN and None alike; numpy scalars as Python values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def online_values(store: Any, view: str, customers: list[str]) -> dict[str, list[Any]]:
    refs = [f"{view}:{name}" for name in FEATURE_VIEWS[view]]
    rows = [{CUSTOMER_KEY: customer} for customer in customers]
    response = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    return {name: [plain(v) for v in response[name]] for name in FEATURE_VIEWS[view]}


def newest_offline_values(
    path: Path, view: str, customers: list[str], before: dt.datetime
) -> dict[str, list[Any]]:
    table = pd.read_parquet(path)
    table = table[table[EVENT_TIMESTAMP] < pd.Timestamp(before)]
    newest = table.sort_values(EVENT_TIMESTAMP).groupby(CUSTOMER_KEY).last()
    return {
        name: [
            plain(newest.loc[customer, name]) if customer in newest.index else None
            for customer in customers
        ]
        for name in FEATURE_VIEWS[view]
    }


def test_build_writes_one_table_per_view_and_materialize_loads_every_entity(repo: Repo) -> None:
    assert set(repo.tables) == set(FEATURE_VIEWS)
    loaded = {load.view: load.entities for load in repo.report.views}
    assert loaded == {
        "customer_usage": 3,
        "customer_contract": 3,
        "customer_billing": 2,
        "customer_profile": 3,
        "customer_consent": 3,
        "offer_attributes": 15,
    }


def test_the_consent_view_and_then_the_offers_attributes_are_written_last(repo: Repo) -> None:
    """Readiness reads an offer's attributes: written after every customer view, a first
    materialize stopped before its end leaves the store not ready."""
    order = [load.view for load in repo.report.views]
    assert order[-2:] == ["customer_consent", "offer_attributes"]


def test_training_frame_is_point_in_time_correct(repo: Repo) -> None:
    def utc(text: str) -> pd.Timestamp:
        return pd.Timestamp(text, tz="UTC")

    entities = pd.DataFrame(
        {
            CUSTOMER_KEY: ["C1", "C1", "C3", "C3", "C2", "C2", "C9"],
            OFFER_KEY: ["PLAN_15GB"] * 7,
            EVENT_TIMESTAMP: [
                utc("2026-03-31T23:59:59"),  # March usage becomes known a second later
                utc("2026-04-01T00:00:00"),
                utc("2026-04-09T23:59:59"),  # the change to PLAN_30GB is dated 2026-04-10
                utc("2026-04-10T00:00:00"),
                utc("2026-04-09T12:00:00"),  # the late payment shows on the 2026-04-10 invoice
                utc("2026-04-10T00:00:00"),
                utc("2026-04-10T00:00:00"),  # a customer the store has never seen
            ],
            "label": [1, 0, 1, 0, 1, 0, 1],
        }
    )
    frame = historical_features(entities, "offer_ranker_v1", repo.settings)
    assert frame[CUSTOMER_KEY].tolist() == entities[CUSTOMER_KEY].tolist()
    assert frame["label"].tolist() == [1, 0, 1, 0, 1, 0, 1]
    assert frame["data_gb_m1"].tolist()[:2] == [7.0, 8.0]
    assert frame["usage_month_m1"].tolist()[:2] == ["2026-02-01", "2026-03-01"]
    assert frame["current_plan_id"].tolist()[2:4] == ["PLAN_15GB", "PLAN_30GB"]
    assert frame["current_monthly_fee_sek"].tolist()[2:4] == [249.0, 299.0]
    assert frame["late_payments_12m"].tolist()[4:6] == [0, 1]
    assert frame["offers_shown_6m"].tolist()[:2] == [0, 1]  # shown 2026-03-05, counted in April
    # Plan fit on the usage known at each time: C1 on 5 GB at 179 SEK, offered 15 GB at 249 SEK.
    # By 2026-04-01: 8, 7, 6 GB → (3 + 2 + 1) × 29 / 3 = 58 SEK overage a month.
    assert frame["fit_current_cost_sek_per_month"].tolist()[1] == pytest.approx(237.0)
    assert frame["fit_saving_sek_per_month"].tolist()[1] == pytest.approx(-12.0)
    # A second earlier: 7 and 6 GB only → (2 + 1) × 29 / 2 = 43.5 SEK a month.
    assert frame["fit_current_cost_sek_per_month"].tolist()[0] == pytest.approx(222.5)
    assert frame["offer_monthly_fee_sek"].tolist()[0] == 249.0
    unknown = frame.iloc[6]
    assert math.isnan(unknown["data_gb_m1"]) and unknown["offer_monthly_fee_sek"] == 249.0


def test_every_entity_row_comes_back_once_even_before_the_first_usage(repo: Repo) -> None:
    # C3 signed on 2026-01-01; its first usage (January) is known from 2026-02-01. Two offers
    # shown at the same moment are two rows.
    moment = pd.Timestamp("2026-01-15T09:00:00", tz="UTC")
    entities = pd.DataFrame(
        {
            CUSTOMER_KEY: ["C3", "C3", "C3"],
            OFFER_KEY: ["PLAN_30GB", "ADDON_DATA_10GB", "PLAN_30GB"],
            EVENT_TIMESTAMP: [moment, moment, pd.Timestamp("2026-02-15", tz="UTC")],
        },
        index=[7, 8, 9],
    )
    frame = historical_features(entities, "offer_ranker_v1", repo.settings)
    assert frame.index.tolist() == [7, 8, 9]
    assert frame[OFFER_KEY].tolist() == ["PLAN_30GB", "ADDON_DATA_10GB", "PLAN_30GB"]
    assert frame["current_plan_id"].tolist() == ["PLAN_15GB"] * 3
    assert frame["data_gb_m1"].isna().tolist() == [True, True, False]
    assert frame.loc[9, "data_gb_m1"] == 12.0
    assert frame["offer_monthly_fee_sek"].tolist() == [299.0, 79.0, 299.0]
    # Without usage the costs are the fees: 249 SEK today, 299 on 30 GB, 249 + 79 with the add-on.
    assert frame["fit_current_cost_sek_per_month"].tolist() == [249.0, 249.0, 249.0]
    assert frame["fit_saving_sek_per_month"].tolist() == [-50.0, -79.0, -50.0]


def test_no_value_dated_after_an_entity_row_reaches_it(repo: Repo) -> None:
    """Every customer view, at every snapshot time and a second before it."""
    moments: list[pd.Timestamp] = []
    for view in CUSTOMER_VIEWS:
        table = pd.read_parquet(repo.tables[view])
        for stamp in table[EVENT_TIMESTAMP].unique():
            moments += [pd.Timestamp(stamp), pd.Timestamp(stamp) - pd.Timedelta(seconds=1)]
    moments = sorted(set(moments))
    entities = pd.DataFrame(
        [(customer, moment) for customer in CUSTOMERS for moment in moments],
        columns=[CUSTOMER_KEY, EVENT_TIMESTAMP],
    )
    refs = [f"{view}:{name}" for view in CUSTOMER_VIEWS for name in FEATURE_VIEWS[view]]
    frame = historical_features_by_ref(open_store(repo.settings), entities, refs)
    assert len(frame) == len(entities)
    frame = frame.set_index([CUSTOMER_KEY, EVENT_TIMESTAMP])
    checked = 0
    for view in CUSTOMER_VIEWS:
        table = pd.read_parquet(repo.tables[view]).sort_values(EVENT_TIMESTAMP)
        for customer, moment in entities.itertuples(index=False):
            known = table[(table[CUSTOMER_KEY] == customer) & (table[EVENT_TIMESTAMP] <= moment)]
            got = frame.loc[(customer, moment)]
            for name in FEATURE_VIEWS[view]:
                expected = plain(known.iloc[-1][name]) if len(known) else None
                assert plain(got[name]) == expected, (view, name, customer, moment)
                checked += 1
    assert checked > 10_000


def test_an_objection_holds_from_the_second_it_was_recorded(repo: Repo) -> None:
    entities = pd.DataFrame(
        {
            CUSTOMER_KEY: ["C1", "C1"],
            EVENT_TIMESTAMP: [
                pd.Timestamp("2026-05-20T11:59:59.999999", tz="UTC"),
                pd.Timestamp("2026-05-20T12:00:00", tz="UTC"),
            ],
        }
    )
    frame = historical_features_by_ref(
        open_store(repo.settings),
        entities,
        ["customer_consent:consent_marketing", "customer_consent:objected_marketing"],
    )
    assert frame["consent_marketing"].tolist() == [1, 0]
    assert frame["objected_marketing"].tolist() == [0, 1]


def test_online_read_equals_the_newest_offline_values(repo: Repo) -> None:
    store = open_store(repo.settings)
    for view in CUSTOMER_VIEWS:
        expected = newest_offline_values(repo.tables[view], view, CUSTOMERS, END)
        assert online_values(store, view, CUSTOMERS) == expected, view
    assert online_values(store, "customer_billing", ["C3"])["days_past_due"] == [None]
    unknown = online_values(store, "customer_usage", ["C404"])
    assert all(values == [None] for values in unknown.values())
    fit = store.get_online_features(
        features=store.get_feature_service("offer_ranker_v1"),
        entity_rows=[{CUSTOMER_KEY: "C1", OFFER_KEY: "PLAN_15GB"}],
    ).to_dict()
    # June, May, April: 9, 7.5, 6.5 GB on 5 GB → (4 + 2.5 + 1.5) × 29 / 3 = 77.33 SEK a month.
    assert fit["fit_current_cost_sek_per_month"] == [pytest.approx(256.33)]
    assert fit["fit_saving_sek_per_month"] == [pytest.approx(7.33)]


def customer_read_plan(settings: Settings) -> dict[str, str]:
    """How SQLite finds each view's rows for the direct reader's statement (every customer view
    of one customer), by view table."""
    import sqlite3

    from feast.infra.online_stores.helpers import compute_table_id

    from features.online import OnlineReader

    store = open_store(settings)
    refs = [f"{view}:{name}" for view in CUSTOMER_VIEWS for name in FEATURE_VIEWS[view]]
    statement = OnlineReader(store, refs)._backend.statement  # type: ignore[union-attr]
    connection = sqlite3.connect(Path(settings.feast_dir) / "online.db")
    try:
        steps = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", (b"",))]
    finally:
        connection.close()
    tables = [
        compute_table_id(store.project, store.get_feature_view(view), False)
        for view in CUSTOMER_VIEWS
    ]
    return {table: next(s for s in steps if s.startswith(f"SEARCH {table} ")) for table in tables}


def test_a_customer_read_finds_every_value_in_the_tables_key_order(repo: Repo) -> None:
    """Each view table is its primary key's B-tree (WITHOUT ROWID), and the direct reader reads
    a customer's values by that key, from adjacent pages."""
    plan = customer_read_plan(repo.settings)
    assert plan == {table: f"SEARCH {table} USING PRIMARY KEY (entity_key=?)" for table in plan}


def _layouts(path: Path) -> dict[str, tuple[bool, list[str]]]:
    """Per view table: whether it is WITHOUT ROWID, and the indexes that hold entries."""
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        tables = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table'"
        ).fetchall()
        return {
            name: (
                sql.upper().endswith("WITHOUT ROWID"),
                sorted(
                    index
                    for (index, definition) in connection.execute(
                        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                        (name,),
                    )
                    if definition is not None and not definition.upper().endswith("WHERE 0")
                ),
            )
            for name, sql in tables
        }
    finally:
        connection.close()


def test_apply_and_materialize_keep_the_tables_compact(
    repo: Repo,
) -> None:
    """Apply makes a new store's tables WITHOUT ROWID; a store whose tables Feast created and
    filled (an earlier release's) is rewritten so at the next materialize, new rows or none,
    every value kept; Feast's apply afterwards does not build its entity-key index again."""
    import sqlite3
    import warnings

    from features.repository import repository_objects

    settings = fresh_store_settings(repo, "feast-layout")
    apply_repository(settings)
    path = Path(settings.feast_dir) / "online.db"
    compact = _layouts(path)
    assert len(compact) == len(FEATURE_VIEWS)
    assert compact == {table: (True, []) for table in compact}  # a new store's, at apply
    # An earlier release's store: the tables dropped and created again by Feast's own apply.
    connection = sqlite3.connect(path, isolation_level=None)
    for table in compact:
        connection.execute(f'DROP TABLE "{table}"')
    connection.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_store(settings).apply(repository_objects(settings), partial=False)
    before = _layouts(path)
    assert before and all(
        not compact and indexes == [f"{table}_ek"] for table, (compact, indexes) in before.items()
    )
    # Rows written by Feast itself into its layout, as an earlier release's store holds them.
    store = open_store(settings)
    store.materialize(start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), end_date=END)
    expected = {view: online_values(store, view, [*CUSTOMERS, "C404"]) for view in CUSTOMER_VIEWS}
    assert any(value != [None] * 4 for values in expected.values() for value in values.values())
    assert _layouts(path) == before
    # A row no read can ask for: a rowid table's key allows NULL, a WITHOUT ROWID one refuses it.
    billing = next(table for table in before if table.endswith("customer_billing"))
    connection = sqlite3.connect(path, isolation_level=None)
    kept = connection.execute(f'SELECT COUNT(*) FROM "{billing}"').fetchone()[0]
    connection.execute(
        f'INSERT INTO "{billing}" (entity_key, feature_name, value) '
        "VALUES (NULL, 'days_past_due', x'')"
    )
    connection.close()
    again = materialize(END, settings, show_progress=False)
    assert {load.entities for load in again.views if load.view != "customer_consent"} == {0}
    after = _layouts(path)
    assert after == {table: (True, []) for table in before}
    connection = sqlite3.connect(path)
    assert connection.execute(f'SELECT COUNT(*) FROM "{billing}"').fetchone()[0] == kept
    connection.close()
    store = open_store(settings)
    assert {
        view: online_values(store, view, [*CUSTOMERS, "C404"]) for view in CUSTOMER_VIEWS
    } == expected
    apply_repository(settings)
    assert _layouts(path) == after


def reader_matches_feast(store: Any) -> None:
    from features.online import OnlineFeatures, read_online

    reader = OnlineFeatures(store)
    rows = [{CUSTOMER_KEY: customer} for customer in [*CUSTOMERS, "C404"]]
    for views in (CUSTOMER_VIEWS, ["customer_consent"], ["customer_billing", "customer_usage"]):
        refs = [f"{view}:{name}" for view in views for name in FEATURE_VIEWS[view]]
        expected = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        assert reader.get_online_features(features=refs, entity_rows=rows).to_dict() == expected
    one = read_online(store, "C2", ["customer_billing:days_past_due", "customer_usage:sms_m1"])
    assert one == {CUSTOMER_KEY: "C2", "days_past_due": 1, "sms_m1": 10}


def test_readers_read_while_materialize_writes(repo: Repo) -> None:
    """The SQLite online store is in WAL mode: an open write transaction blocks no reader."""
    import sqlite3

    from features.online import read_online

    store = open_store(repo.settings)
    path = Path(repo.settings.feast_dir) / "online.db"
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.execute("BEGIN IMMEDIATE")
        table = next(
            name
            for (name,) in writer.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name.endswith("customer_billing")
        )
        writer.execute(f'UPDATE "{table}" SET value = value')  # a write not yet committed
        one = read_online(store, "C2", ["customer_billing:days_past_due"])
        assert one == {CUSTOMER_KEY: "C2", "days_past_due": 1}
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def _online_copy(repo: Repo, name: str) -> tuple[Any, Path]:
    """A store over a copy of the materialized online database, put back in rollback-journal
    mode (as a store written before WAL was set is)."""
    import sqlite3

    settings = fresh_store_settings(repo, name)
    apply_repository(settings)
    path = Path(settings.feast_dir) / "online.db"
    shutil.copy(Path(repo.settings.feast_dir) / "online.db", path)
    connection = sqlite3.connect(path, isolation_level=None)
    assert connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    connection.close()
    return open_store(settings), path


def test_a_read_waits_for_a_lock_no_longer_than_the_feature_timeout(repo: Repo) -> None:
    """In rollback-journal mode a writer's exclusive lock blocks readers; the API's readers give
    up at the feature timeout (0.2 s here) instead of SQLite's default five seconds."""
    import sqlite3
    import time

    from features.online import OnlineFeatures

    store, path = _online_copy(repo, "locked")
    online = OnlineFeatures(store)
    assert online.bound_reads(0.2)
    refs = ["customer_billing:days_past_due"]
    rows = [{CUSTOMER_KEY: "C2"}]
    assert online.get_online_features(refs, rows).to_dict()["days_past_due"] == [1]
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            online.get_online_features(refs, rows)
        assert time.monotonic() - started < 2.5  # bounded near 0.2 s, far from 5 s
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert online.get_online_features(refs, rows).to_dict()["days_past_due"] == [1]


def test_readers_recover_the_store_after_a_writer_is_killed_mid_write(repo: Repo) -> None:
    """A writer killed inside its transaction leaves a hot journal, on which every read-only
    read fails; the reader rolls it back once and reads the last committed values."""
    from features.online import OnlineFeatures

    store, path = _online_copy(repo, "killed")
    killed_writer = f"""
import os, sqlite3
connection = sqlite3.connect({str(path)!r}, isolation_level=None)
connection.execute("PRAGMA cache_size=1")  # spill the changes into the file before commit
connection.execute("BEGIN")
tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
for (table,) in tables:
    connection.execute(f'UPDATE "{{table}}" SET value = NULL')
os._exit(9)
"""
    subprocess.run([sys.executable, "-c", killed_writer], check=False)
    assert Path(f"{path}-journal").exists()
    online = OnlineFeatures(store)
    online.bound_reads(0.5)
    refs = ["customer_billing:days_past_due", "customer_usage:sms_m1"]
    values = online.get_online_features(refs, [{CUSTOMER_KEY: "C2"}]).to_dict()
    assert values["days_past_due"] == [1] and values["sms_m1"] == [10]
    assert not Path(f"{path}-journal").exists()


def test_the_direct_online_reader_answers_what_feast_answers(repo: Repo) -> None:
    reader_matches_feast(open_store(repo.settings))


def test_materialize_is_incremental(repo: Repo) -> None:
    settings = fresh_store_settings(repo, "incremental")
    apply_repository(settings)
    first = materialize(dt.datetime(2026, 4, 15), settings, show_progress=False)
    store = open_store(settings)
    assert online_values(store, "customer_contract", ["C3"])["current_plan_id"] == ["PLAN_30GB"]
    assert online_values(store, "customer_usage", ["C1"])["usage_month_m1"] == ["2026-03-01"]
    second = materialize(END, settings, show_progress=False)
    usage = {load.view: load for load in second.views}["customer_usage"]
    assert usage.start == dt.datetime(2026, 4, 15, tzinfo=dt.UTC)
    assert usage.rows_read == 3 * 3  # May, June and July snapshots of three customers
    assert online_values(open_store(settings), "customer_usage", ["C1"])["data_gb_m1"] == [9.0]
    again = materialize(END, settings, show_progress=False)
    # Only the consent view is read again: it is reloaded whole on every run.
    read_again = {load.view: load.rows_read for load in again.views if load.rows_read}
    assert set(read_again) == {"customer_consent"}
    assert sum(load.rows_read for load in first.views) > 0


def test_a_consent_recorded_late_reaches_the_online_store(repo: Repo, tmp_path: Path) -> None:
    """A withdrawal stamped before the last materialize's end, but recorded after it, is loaded
    by the next materialize: the consent view is reloaded whole."""
    from tests.factories.features import consent

    settings, world, raw = materialized_world_of_its_own(repo, "late-consent", tmp_path)
    before = online_values(open_store(settings), "customer_consent", ["C2"])
    assert before["consent_marketing"] == [1]
    late = pd.DataFrame([consent("C2", "marketing", False, "2026-06-30T09:00:00Z")])
    late["updated_at"] = pd.to_datetime(late["updated_at"], utc=True)
    world["consents"] = pd.concat([world["consents"], late], ignore_index=True)
    write_tables(world, raw)
    build_features(settings=settings)
    materialize(END + dt.timedelta(hours=1), settings, show_progress=False)
    after = online_values(open_store(settings), "customer_consent", ["C2"])
    assert after["consent_marketing"] == [0] and after["objected_marketing"] == [1]


def test_a_changed_history_reaches_the_store_by_a_whole_reload(repo: Repo, tmp_path: Path) -> None:
    """An incremental materialize loads only rows dated after its last end: another world's
    history, or corrected source data, reaches the store by a whole reload, asked for once
    (simulate and erase ask for it) or by ``--whole``."""
    settings, world, raw = materialized_world_of_its_own(repo, "changed-history", tmp_path)

    def c1_june_data_gb() -> list[Any]:
        return online_values(open_store(settings), "customer_usage", ["C1"])["data_gb_m1"]

    assert c1_june_data_gb() == [9.0]
    corrected = world["usage_monthly"].copy()
    corrected.loc[(corrected[CUSTOMER_KEY] == "C1") & (corrected["data_gb"] == 9.0), "data_gb"] = (
        4.0
    )
    write_tables({**world, "usage_monthly": corrected}, raw)
    build_features(settings=settings)
    materialize(END + dt.timedelta(hours=1), settings, show_progress=False)
    assert c1_june_data_gb() == [9.0]  # dated before the last end: not read again

    request_whole_reload(settings, "corrected usage")
    assert whole_reload_requested(settings) == "corrected usage"
    report = materialize(END + dt.timedelta(hours=2), settings, show_progress=False)
    assert all(load.start is None for load in report.views)
    assert c1_june_data_gb() == [4.0]
    assert whole_reload_requested(settings) is None  # once
    again = materialize(END + dt.timedelta(hours=3), settings, show_progress=False)
    assert {load.view for load in again.views if load.rows_read} == {"customer_consent"}
    forced = materialize(END + dt.timedelta(hours=4), settings, show_progress=False, whole=True)
    assert all(load.start is None and load.rows_read for load in forced.views)


def test_feast_own_materialize_writes_the_same_values(repo: Repo) -> None:
    settings = fresh_store_settings(repo, "feast-engine")
    apply_repository(settings)
    materialize(END, settings, engine="feast", show_progress=False)
    feast_store, bulk_store = open_store(settings), open_store(repo.settings)
    for view in CUSTOMER_VIEWS:
        assert online_values(feast_store, view, CUSTOMERS) == online_values(
            bulk_store, view, CUSTOMERS
        ), view


@pytest.mark.redis
def test_redis_returns_the_same_values_as_sqlite(repo: Repo, redis_url: str) -> None:
    import redis

    project = f"offers_test_{uuid.uuid4().hex[:8]}"
    settings = fresh_store_settings(repo, "redis", online_store=redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        apply_repository(settings, project=project)
        materialize(END, settings, project=project, show_progress=False)
        redis_store = open_store(settings, project=project)
        sqlite_store = open_store(repo.settings)
        for view in CUSTOMER_VIEWS:
            assert online_values(redis_store, view, CUSTOMERS) == online_values(
                sqlite_store, view, CUSTOMERS
            ), view
        assert len(list(client.scan_iter(match=b"*" + project.encode()))) == 3 + 15
        reader_matches_feast(redis_store)
    finally:
        for key in client.scan_iter(match=b"*" + project.encode()):
            client.delete(key)
        client.close()


@pytest.mark.postgres
def test_registry_in_postgres(repo: Repo, postgres_url: str) -> None:
    import sqlalchemy

    schema = f"offers_features_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(sqlalchemy_url(postgres_url))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    registry_url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    try:
        settings = fresh_store_settings(repo, "postgres", registry_url=registry_url)
        apply_repository(settings)
        materialize(END, settings, views=["customer_contract"], show_progress=False)
        store = open_store(settings)
        assert {view.name for view in store.list_feature_views()} == set(FEATURE_VIEWS)
        assert store.get_feature_service("churn_v1").name == "churn_v1"
        values = online_values(store, "customer_contract", ["C3"])
        assert values["current_plan_id"] == ["PLAN_30GB"]
        with engine.connect() as connection:
            tables = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"
                ),
                {"s": schema},
            ).scalar()
        assert tables and tables > 0
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_configuration_for_scale_is_chosen_by_settings_alone(tmp_path: Path) -> None:
    from features.repository import repository_objects

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        online_store="redis://cache.internal:6380/2",
        registry_url="postgresql://feast@db.internal:5432/registry",
        offline_store="spark",
        spark_master="spark://spark.internal:7077",
        features_dir=tmp_path / "features",
        feast_dir=tmp_path / "feast",
    )
    config = repo_config(settings)
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "cache.internal:6380,db=2"
    assert config.registry.registry_type == "sql"
    assert config.registry.path == "postgresql+psycopg://feast@db.internal:5432/registry"
    assert config.registry.cache_mode == "thread"
    assert config.offline_store.type == "spark"
    assert config.offline_store.spark_conf["spark.master"] == "spark://spark.internal:7077"
    sources = {
        obj.name: obj for obj in repository_objects(settings) if type(obj).__name__ == "SparkSource"
    }
    assert set(sources) == {f"{view}_source" for view in FEATURE_VIEWS}
    assert sources["customer_usage_source"].path == str(
        (tmp_path / "features" / "customer_usage.parquet").resolve()
    )

    default = repo_config(
        Settings(_env_file=None, feast_dir=tmp_path / "feast")  # type: ignore[call-arg]
    )
    assert default.online_store.type == "sqlite"
    assert default.online_store.path == str((tmp_path / "feast" / "online.db").resolve())
    assert default.registry.registry_type == "file"
    assert default.offline_store.type == "file"


def test_historical_features_names_a_missing_key(repo: Repo) -> None:
    entities = pd.DataFrame({CUSTOMER_KEY: ["C1"], EVENT_TIMESTAMP: [END]})
    with pytest.raises(ValueError, match="offer_id"):
        historical_features(entities, "offer_ranker_v1", repo.settings)


@pytest.mark.slow
def test_feast_cli_apply_inside_the_repository_folder(repo: Repo, tmp_path: Path) -> None:
    """`feast apply` run inside features/repo/ imports the definitions once and nothing else."""
    folder = tmp_path / "features" / "repo"
    shutil.copytree(
        REPO / "features" / "repo", folder, ignore=shutil.ignore_patterns("__pycache__")
    )
    (folder / "feature_store.yaml").write_text(
        (folder / "feature_store.yaml")
        .read_text()
        .replace("../../data/feast/", f"{tmp_path}/feast/")
    )
    shutil.copytree(repo.settings.features_dir, tmp_path / "data" / "features")
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "apply"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Created feature service offer_ranker_v1" in result.stdout
    assert "Created on demand feature view plan_fit" in result.stdout


def test_materialize_names_a_feature_table_an_earlier_release_built(
    repo: Repo, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    features = tmp_path / "features"
    shutil.copytree(repo.settings.features_dir, features)
    path = features / "customer_contract.parquet"
    pq.write_table(pq.read_table(path).drop(["contract_ended_on"]), path)
    settings = fresh_store_settings(repo, "old-tables").model_copy(
        update={"features_dir": features}
    )
    apply_repository(settings)
    with pytest.raises(ValueError, match=r"lacks contract_ended_on: .* `offers features build`"):
        materialize(END, settings, show_progress=False)


def test_a_view_whose_values_a_release_computes_otherwise_is_reloaded_whole(repo: Repo) -> None:
    """Same feature names, values computed otherwise (``ViewSpec.revision``): the rows already
    stored keep the old values under an incremental materialize, so apply asks for a whole
    reload; applying again with nothing changed asks for none."""
    from features.materialize import whole_reload_requested
    from features.views import REVISION_TAG

    settings = fresh_store_settings(repo, "revision")
    apply_repository(settings)
    materialize(END, settings, show_progress=False)
    assert whole_reload_requested(settings) is None
    apply_repository(settings)
    assert whole_reload_requested(settings) is None  # nothing changed
    store = open_store(settings)
    earlier = store.get_feature_view("customer_contract")
    assert earlier.tags[REVISION_TAG] == "2"
    earlier.tags = {k: v for k, v in earlier.tags.items() if k != REVISION_TAG}  # revision 1
    store.apply([earlier])
    apply_repository(settings)
    requested = whole_reload_requested(settings)
    assert requested is not None and requested.endswith("values: customer_contract")
    report = materialize(END, settings, show_progress=False)
    assert whole_reload_requested(settings) is None
    assert all(load.start is None for load in report.views)  # every view from the beginning
