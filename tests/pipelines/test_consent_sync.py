"""``offers consents sync`` on the small hand-made world: a materialize undoes nothing once the
sync has run, the consents table's newer answers win, and consent files are recorded once.

C1 granted marketing and profiling, then objected to marketing (2026-05-20); C2 granted
marketing (2024-06-01) and usage insights (2026-03-03); C3 has no consent rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from core.settings import Settings
from features.consent_changes import ConsentAnswer
from features.consent_rows import OnlineConsentRow, OnlineConsentRows
from features.pipeline import build_features
from features.store import PROJECT, apply_repository, materialize, open_store
from pipelines.consent_sync import sync_after_materialize, sync_consents
from serving.consents import ConsentService
from serving.decision_log import DecisionLog
from serving.decision_log.consents import find_consent_change
from serving.feature_reader import OpenFeatureStore, open_feast_source
from serving.metrics import ApiMetrics
from tests.factories.features import CATALOG_PATH, consent, small_world, write_tables

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class World:
    """The small world built, applied and materialized, with a decision log of its own."""

    settings: Settings
    project: str
    log: DecisionLog
    service: ConsentService

    def row(self, customer_id: str) -> OnlineConsentRow | None:
        store = open_store(self.settings, self.project)
        return OnlineConsentRows(store, self.settings).read([customer_id]).get(customer_id)

    def flags(self, customer_id: str) -> tuple[int, int, int, int]:
        row = self.row(customer_id)
        assert row is not None
        values = row.values
        return (
            values["consent_marketing"],
            values["consent_profiling"],
            values["consent_usage_insights"],
            values["objected_marketing"],
        )

    def answer(self, change_id: str, customer_id: str, purpose: str, granted: bool, at: Any) -> str:
        moment = pd.Timestamp(at).to_pydatetime()
        result = self.service.record(
            change_id, ConsentAnswer(customer_id, purpose, granted, moment)
        )
        return result.online

    def materialize(self) -> None:
        materialize(
            NOW + dt.timedelta(hours=1), self.settings, project=self.project, show_progress=False
        )

    def sync(self, **options: Any) -> Any:
        return sync_consents(self.settings, self.log, project=self.project, **options)


def _settings(root: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=root / "raw",
        features_dir=root / "features",
        feast_dir=root / "feast",
        catalog=CATALOG_PATH,
        database_url=f"sqlite:///{root / 'offers.db'}",
        **overrides,
    )


def _build(root: Path, project: str = PROJECT, **overrides: Any) -> Settings:
    settings = _settings(root, **overrides)
    write_tables(small_world(), settings.data_dir)
    build_features(settings=settings)
    apply_repository(settings, project)
    materialize(NOW, settings, project=project, show_progress=False)
    return settings


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    overrides: dict[str, Any] = {}
    project = PROJECT
    if request.param == "redis":
        overrides["online_store"] = request.getfixturevalue("redis_url")
        project = f"consent_sync_{uuid.uuid4().hex[:8]}"
    settings = _build(tmp_path, project, **overrides)
    log = DecisionLog(settings.database_url)
    source = open_feast_source(settings, project)
    service = ConsentService(log=log, feature_store=OpenFeatureStore(source), metrics=ApiMetrics())
    try:
        yield World(settings, project, log, service)
    finally:
        source.close()
        log.close()
        if request.param == "redis":
            import redis

            client = redis.Redis.from_url(overrides["online_store"])
            for key in client.scan_iter(match=b"*" + project.encode()):
                client.delete(key)
            client.close()


def test_a_materialize_undoes_an_api_withdrawal_and_the_sync_restores_it(world: World) -> None:
    withdrawn_at = NOW - dt.timedelta(minutes=1)
    assert world.answer("CC-1", "C2", "marketing", False, withdrawn_at) == "applied"
    assert world.flags("C2") == (0, 0, 1, 1)

    world.materialize()  # the consents table knows nothing of the API's change
    assert world.flags("C2") == (1, 0, 1, 0)

    report = world.sync()
    assert (report.customers_updated, report.changes_applied) == (1, 1)
    assert (report.superseded_by_table, report.unknown_customers) == (0, 0)
    assert world.flags("C2") == (0, 0, 1, 1)
    row = world.row("C2")
    assert row is not None and row.event_time == withdrawn_at
    assert row.values["birth_year"] == 1960 and row.values["segment"] == "consumer"

    again = world.sync()  # nothing undone since: nothing to write
    assert (again.customers_updated, again.changes_applied, again.already_held) == (0, 1, 1)
    assert world.flags("C2") == (0, 0, 1, 1)


def test_materialize_and_sync_after_it_revert_nothing(world: World) -> None:
    world.answer("CC-1", "C2", "marketing", False, NOW - dt.timedelta(minutes=1))
    world.answer("CC-2", "C3", "usage_insights", True, NOW - dt.timedelta(minutes=1))
    world.materialize()
    line = sync_after_materialize(world.settings, project=world.project)
    assert line.startswith(
        "consents sync: 2 customers updated online (2 changes held online, 0 of them already)"
    )
    assert world.flags("C2") == (0, 0, 1, 1)
    assert world.flags("C3") == (0, 0, 1, 0)


def test_a_newer_answer_in_the_consents_table_wins_over_an_older_api_change(
    world: World,
) -> None:
    # The API withdraws C2's usage insights on 2026-04-01 (after the row's 2026-03-03 change)...
    assert world.answer("CC-1", "C2", "usage_insights", False, "2026-04-01T08:00:00Z") == "applied"
    assert world.flags("C2")[2] == 0
    # ...and the consents table later holds a newer grant, stamped 2026-05-01.
    tables = small_world()
    newer = pd.DataFrame([consent("C2", "usage_insights", True, "2026-05-01T08:00:00Z")])
    newer["updated_at"] = pd.to_datetime(newer["updated_at"], utc=True)
    tables["consents"] = pd.concat([tables["consents"], newer], ignore_index=True)
    write_tables(tables, world.settings.data_dir)
    build_features(settings=world.settings)
    world.materialize()

    report = world.sync()
    assert (report.customers_updated, report.superseded_by_table) == (0, 1)
    assert world.flags("C2") == (1, 0, 1, 0)
    stored = find_consent_change(world.log, "CC-1")
    assert stored is not None  # kept, for the record


def test_the_sync_counts_a_grant_only_the_consents_table_holds(world: World) -> None:
    """C3's marketing grant reached the consents table but not yet the online store; a withdrawal
    through the API is then a refusal online, and the sync, which reads the table, makes it the
    objection it is."""
    tables = small_world()
    grant = pd.DataFrame([consent("C3", "marketing", True, "2026-06-01T08:00:00Z")])
    grant["updated_at"] = pd.to_datetime(grant["updated_at"], utc=True)
    tables["consents"] = pd.concat([tables["consents"], grant], ignore_index=True)
    write_tables(tables, world.settings.data_dir)
    assert world.answer("CC-1", "C3", "marketing", False, NOW - dt.timedelta(minutes=1)) == (
        "applied"
    )
    assert world.flags("C3") == (0, 0, 0, 0)
    report = world.sync()
    assert report.customers_updated == 1
    assert world.flags("C3") == (0, 0, 0, 1)


def test_a_customer_the_store_does_not_know_is_counted_and_applied_later(world: World) -> None:
    assert world.answer("CC-1", "C9", "marketing", True, NOW) == "unknown-customer"
    report = world.sync()
    assert (report.unknown_customers, report.customers_updated) == (1, 0)
    stored = find_consent_change(world.log, "CC-1")
    assert stored is not None and stored.applied_at is None


def test_a_deferred_grant_is_applied_by_the_sync_when_the_table_has_nothing_newer(
    world: World,
) -> None:
    # C1's row is stamped 2026-05-20 12:00 (the objection); a grant of usage insights from
    # before then waits, since the row does not say which purpose changed at that time.
    deferred = world.answer("CC-1", "C1", "usage_insights", True, "2026-05-01T00:00:00Z")
    assert deferred == "deferred"
    assert world.flags("C1")[2] == 0
    report = world.sync()
    assert report.customers_updated == 1
    assert world.flags("C1") == (0, 1, 1, 1)


# --- the commands -----------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Settings]]:
    """The ``offers`` app over a small world in tmp_path (SQLite store, SQLite decision log)."""
    from core.settings import get_settings
    from pipelines import cli as cli_module

    settings = _build(tmp_path)
    for name, value in {
        "OFFERS_DATA_DIR": settings.data_dir,
        "OFFERS_FEATURES_DIR": settings.features_dir,
        "OFFERS_FEAST_DIR": settings.feast_dir,
        "OFFERS_CATALOG": settings.catalog,
        "OFFERS_DATABASE_URL": settings.database_url,
        "OFFERS_ONLINE_STORE": "sqlite",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(cli_module, "console", Console(stderr=True, width=1000))
    get_settings.cache_clear()
    yield cli_module.app, settings
    get_settings.cache_clear()


def _flags(settings: Settings, customer_id: str) -> tuple[int, int, int, int]:
    rows = OnlineConsentRows(open_store(settings), settings).read([customer_id])
    values = rows[customer_id].values
    return (
        values["consent_marketing"],
        values["consent_profiling"],
        values["consent_usage_insights"],
        values["objected_marketing"],
    )


def test_offers_features_materialize_syncs_the_api_changes(cli: tuple[Any, Settings]) -> None:
    app, settings = cli
    log = DecisionLog(settings.database_url)
    source = open_feast_source(settings)
    service = ConsentService(log=log, feature_store=OpenFeatureStore(source), metrics=ApiMetrics())
    moment = NOW - dt.timedelta(minutes=1)
    service.record("CC-1", ConsentAnswer("C2", "marketing", False, moment))
    source.close()
    log.close()
    end = (NOW + dt.timedelta(hours=1)).isoformat()
    result = CliRunner().invoke(app, ["features", "materialize", "--end", end])
    assert result.exit_code == 0, result.output
    assert "consents sync: 1 customers updated online" in result.output
    assert _flags(settings, "C2") == (0, 0, 1, 1)


def test_offers_features_materialize_without_a_decision_log_has_nothing_to_sync(
    cli: tuple[Any, Settings],
) -> None:
    app, settings = cli
    result = CliRunner().invoke(app, ["features", "materialize"])
    assert result.exit_code == 0, result.output
    assert "no consent changes; nothing to apply" in result.output
    # Nothing was created for it.
    assert not Path(settings.database_url.removeprefix("sqlite:///")).exists()


def test_offers_features_materialize_warns_when_the_decision_log_does_not_answer(
    cli: tuple[Any, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from core.settings import get_settings

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OFFERS_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/test")
    get_settings.cache_clear()
    app, _ = cli
    result = CliRunner().invoke(app, ["features", "materialize"])
    assert result.exit_code == 0, result.output
    assert "materialized into sqlite" in result.output
    assert "warning: consent changes received through the API were NOT applied again" in (
        result.output
    )


def test_offers_consents_sync_records_a_file_once_and_applies_it(
    cli: tuple[Any, Settings], tmp_path: Path
) -> None:
    app, settings = cli
    answers = tmp_path / "answers.csv"
    pd.DataFrame(
        [
            consent("C3", "marketing", True, (NOW - dt.timedelta(hours=1)).isoformat()),
            consent("C3", "profiling", True, "2026-12-01 10:00:00"),  # no zone: UTC
            consent("C1", "marketing", True, "2025-01-01T00:00:00Z"),  # the table has newer
            consent("C9", "marketing", True, "2026-12-01T10:00:00Z"),  # not in the store
        ]
    ).to_csv(answers, index=False)
    first = CliRunner().invoke(app, ["consents", "sync", "--file", str(answers)])
    assert first.exit_code == 0, first.output
    assert "4 consent answers, 4 new" in first.output
    assert "1 customers updated online (2 changes held online, 0 of them already)" in first.output
    assert "1 changes superseded by the consents table" in first.output
    assert "1 customers unknown to the online store" in first.output
    assert _flags(settings, "C1") == (0, 1, 0, 1)
    assert _flags(settings, "C3") == (1, 1, 0, 0)

    again = CliRunner().invoke(app, ["consents", "sync", "--file", str(answers)])
    assert again.exit_code == 0, again.output
    assert "4 consent answers, 0 new" in again.output
    assert "0 customers updated online (2 changes held online, 2 of them already)" in again.output


def test_offers_consents_sync_refuses_a_file_naming_the_column_and_rows(
    cli: tuple[Any, Settings], tmp_path: Path
) -> None:
    app, _ = cli
    answers = tmp_path / "answers.parquet"
    frame = pd.DataFrame(
        [
            consent("C3", "marketing", True, "2026-12-01T10:00:00Z"),
            consent("C3", "newsletter", True, "2026-12-01T10:00:00Z"),
        ]
    )
    frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True)
    frame.to_parquet(answers)
    result = CliRunner().invoke(app, ["consents", "sync", "--file", str(answers)])
    assert result.exit_code == 1
    assert "column purpose: must be one of marketing, profiling, usage_insights (rows 2)" in (
        result.output
    )


def test_a_consent_file_with_a_nul_in_an_id_is_refused_before_the_database(
    tmp_path: Path,
) -> None:
    from pipelines.consent_sync import read_consent_file

    answers = tmp_path / "answers.parquet"
    frame = pd.DataFrame(
        [
            consent("C3", "marketing", True, "2026-12-01T10:00:00Z"),
            consent("C\x003", "marketing", True, "2026-12-01T10:00:00Z"),
        ]
    )
    frame.to_parquet(answers)
    with pytest.raises(ValueError, match=r"column customer_id: must not contain control"):
        read_consent_file(answers)
    with pytest.raises(ValueError, match=r"\(rows 2\)"):
        read_consent_file(answers)


def test_a_consent_file_that_cannot_be_read_is_named_with_what_it_should_be(
    tmp_path: Path,
) -> None:
    from pipelines.consent_sync import read_consent_file

    not_parquet = tmp_path / "answers.json"
    not_parquet.write_text("{bad", encoding="utf-8")
    with pytest.raises(ValueError, match="not a readable Parquet") as raised:
        read_consent_file(not_parquet)
    assert str(raised.value).startswith(f"{not_parquet}: ")
    not_csv = tmp_path / "answers.csv"
    not_csv.write_bytes(b"customer_id,purpose\n\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not a readable CSV file") as raised:
        read_consent_file(not_csv)
    assert str(raised.value).startswith(f"{not_csv}: ")
