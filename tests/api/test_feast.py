"""The API over a real Feast store (SQLite online store, and Redis): reads, unknown customers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.settings import Settings
from serving.app import Connectors, create_app
from serving.feature_reader import FeastFeatureSource, open_feast_source
from tests.factories.api import (
    FakeRegistry,
    api_settings,
    auth,
    build_feast_store,
    customers,
    feast_settings,
    offers_body,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def sqlite_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = feast_settings(tmp_path_factory.mktemp("feast"))
    build_feast_store(settings)
    return settings


@pytest.fixture(scope="module")
def source(sqlite_settings: Settings) -> Iterator[FeastFeatureSource]:
    opened = open_feast_source(sqlite_settings)
    yield opened
    opened.close()


def test_the_feast_source_reads_what_was_materialized(source: FeastFeatureSource) -> None:
    consent, _, profile = customers()["C0001"]
    read = source.read_consent("C0001")
    assert read is not None
    assert read["consent_marketing"] == 1 and read["segment"] == "consumer"
    assert read["birth_year"] == consent["birth_year"]
    row = source.read_account("C0001")
    assert row["current_plan_id"] == "PLAN_5GB" and row["data_gb_m1"] == pytest.approx(9.0)
    assert source.read_profile("C0001")["offers_shown_6m"] == profile["offers_shown_6m"]
    # One statement over the four views reads what the two reads do.
    assert source.read_account_and_profile("C0001") == (row, source.read_profile("C0001"))


def test_a_customer_feast_never_saw_is_unknown(source: FeastFeatureSource) -> None:
    assert source.read_consent("C-NEVER-SEEN") is None


def reads_many_as_one_by_one(source: FeastFeatureSource) -> None:
    """Many customers in one read, in the order asked, each as its own read gives it."""
    asked = ["C0003", "C-NEVER-SEEN", "C0001", "C0002", "C0001"]
    assert source.read_consents(asked) == [source.read_consent(c) for c in asked]
    assert source.read_consents(asked)[1] is None
    known = [c for c in asked if c != "C-NEVER-SEEN"]
    assert source.read_accounts(known) == [source.read_account(c) for c in known]
    assert source.read_accounts_and_profiles(known) == [
        source.read_account_and_profile(c) for c in known
    ]
    assert source.read_accounts([]) == []


def test_the_feast_source_reads_many_customers_at_once(source: FeastFeatureSource) -> None:
    reads_many_as_one_by_one(source)


def test_the_api_decides_from_the_feast_store(sqlite_settings: Settings) -> None:
    app = create_app(
        sqlite_settings,
        connectors=Connectors(model_loader=lambda settings: FakeRegistry().loader()),
    )
    renderer = auth("renderer")
    with running(app) as client:
        assert client.get("/health/ready").status_code == 200
        decided = client.post("/v1/offers", json=offers_body(), headers=renderer)
        unknown = client.post(
            "/v1/offers",
            json=offers_body(invoice_id="INV-U", customer_id="C9999"),
            headers=renderer,
        )
        summary = client.get("/v1/customers/C0003/usage-summary", headers=renderer)
    assert decided.status_code == 200
    body = decided.json()
    assert (body["policy"], body["degraded"]) == ("model", None)
    assert body["offers"] and body["usage_summary"]["plan"]["plan_id"] == "PLAN_5GB"
    assert unknown.status_code == 404
    assert summary.status_code == 200 and summary.json()["detail_level"] == "basic"


def test_the_batch_endpoint_decides_from_the_feast_store_as_the_single_route(
    sqlite_settings: Settings,
) -> None:
    app = create_app(
        sqlite_settings,
        connectors=Connectors(model_loader=lambda settings: FakeRegistry().loader()),
    )
    renderer = auth("renderer")
    items = [
        offers_body(invoice_id=f"INV-B{number}", customer_id=customer)
        for number, customer in enumerate(["C0001", "C0003", "C9999", "C0002", "C0004"])
    ]
    with running(app) as client:
        response = client.post("/v1/offers/batch", json={"invoices": items}, headers=renderer)
        alone = [
            client.post(
                "/v1/offers",
                json={**item, "invoice_id": item["invoice_id"] + "-ALONE"},
                headers=renderer,
            )
            for item in items
        ]
    results = response.json()["results"]
    assert [result["status"] for result in results] == [200, 200, 404, 200, 200]
    policies = [result["decision"]["policy"] for result in results if result["status"] == 200]
    assert policies == ["model", "non_personalised", "model", "none"]
    for result, single in zip(results, alone, strict=True):
        if result["status"] != 200:
            assert single.status_code == result["status"]
            continue
        batched = {**result["decision"], "invoice_id": None, "decision_id": None}
        assert {**single.json(), "invoice_id": None, "decision_id": None} == batched


def test_an_unreachable_redis_fails_each_read_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One connection attempt per read: redis-py's default retries with backoff (five reads
    from a closed port took 42 s here) are off on the request path."""
    import socket

    from features.online import OnlineFeatures
    from features.store import open_store

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_store(feast_settings(tmp_path, online_store=f"redis://127.0.0.1:{port}/0"))
    online = OnlineFeatures(store)
    assert online.bound_reads(0.05) is True
    client = store._get_provider().online_store._get_client(store.config.online_store)
    attempts = []
    connect = redis.connection.Connection._connect

    def counted(self: redis.connection.Connection) -> object:
        attempts.append(1)
        return connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted)
    for _ in range(5):
        with pytest.raises(redis.exceptions.ConnectionError):
            client.hmget(b"key", [b"field"])
    assert len(attempts) == 5


@pytest.mark.redis
def test_the_feast_source_reads_redis(tmp_path: Path, redis_url: str) -> None:
    from features.store import open_store

    # A project of its own: Redis keys carry the project, so other tests' customers stay apart.
    project = f"api_test_{uuid.uuid4().hex[:8]}"
    settings = feast_settings(tmp_path, online_store=redis_url)
    build_feast_store(settings, project)
    store = open_store(settings, project)
    from features.online import OnlineFeatures

    online = OnlineFeatures(store)
    # Redis bounds its own reads: the socket timeout is set on the client Feast uses.
    assert online.bound_reads(0.05) is True
    client = store._get_provider().online_store._get_client(store.config.online_store)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.05
    opened = FeastFeatureSource(online, timeout_ms=50, store_bounds_reads=True)
    try:
        read = opened.read_consent("C0003")
        assert read is not None and read["consent_profiling"] == 0
        assert opened.read_consent("C-NEVER-SEEN") is None
        # Account and profile of one customer in one HMGET, as the two reads give them.
        together = opened.read_account_and_profile("C0001")
        assert together == (opened.read_account("C0001"), opened.read_profile("C0001"))
        assert together[0]["current_plan_id"] == "PLAN_5GB"
        reads_many_as_one_by_one(opened)  # one pipeline of HMGETs
    finally:
        opened.close()
        store.teardown()


def test_a_store_that_answers_but_holds_nothing_is_not_ready(tmp_path: Path) -> None:
    """Readiness reads a key every materialized store holds (a catalog offer's attributes): an
    online store that answers but is empty, as a Redis restarted without its data is, is not
    ready until materialize has run."""
    from features.store import apply_repository, materialize

    settings = feast_settings(tmp_path)
    build_feast_store(settings)
    empty = api_settings(
        tmp_path / "empty", features_dir=tmp_path / "features", feast_dir=tmp_path / "empty"
    )
    apply_repository(empty)  # a registry and an online store, nothing written to it yet
    app = create_app(
        empty, connectors=Connectors(model_loader=lambda opened: FakeRegistry().loader())
    )
    with running(app) as client:
        answer = client.get("/health/ready")
        assert answer.status_code == 503
        assert (
            "does not answer (empty: run `offers features materialize`)" in answer.json()["detail"]
        )
        materialize(settings=empty, show_progress=False)
        assert client.get("/health/ready").status_code == 200


def test_a_store_an_earlier_release_applied_is_named_until_applied_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose registry and rows an earlier release wrote, without a feature this release
    reads (the contract view as it was before ``contract_ended_on``), is not opened: readiness
    names the view, the feature and the commands, and each offer is answered degraded. `offers
    features apply` registers the feature and asks the next materialize for a whole reload, since
    an incremental one would leave the customers' rows without it."""
    import datetime as dt

    import serving.app
    from core.catalog import load_catalog
    from features.materialize import whole_reload_requested
    from features.pipeline import write_feature_tables
    from features.store import PROJECT, apply_repository, materialize, open_store
    from features.transforms.offer_attributes import offer_features
    from tests.factories.api import feature_frames

    monkeypatch.setattr(serving.app, "FEATURE_RETRY_SECONDS", 0.0)
    settings = feast_settings(tmp_path)
    frames = feature_frames()
    frames["offer_attributes"] = offer_features(load_catalog(settings.catalog))
    write_feature_tables(frames, Path(settings.features_dir))
    apply_repository(settings)
    store = open_store(settings, PROJECT)
    earlier = store.get_feature_view("customer_contract")
    earlier.features = [field for field in earlier.features if field.name != "contract_ended_on"]
    store.apply([earlier])
    assert whole_reload_requested(settings) is None
    loaded_until = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    materialize(loaded_until, settings, show_progress=False)
    app = create_app(
        settings, connectors=Connectors(model_loader=lambda opened: FakeRegistry().loader())
    )
    with running(app) as client:
        answer = client.get("/health/ready")
        assert answer.status_code == 503
        detail = answer.json()["detail"]
        assert detail.startswith("the feature store is not open: feature view customer_contract")
        assert "has no feature(s) contract_ended_on" in detail
        assert "`offers features apply`" in detail
        offered = client.post("/v1/offers", json=offers_body(), headers=auth("renderer"))
        assert offered.status_code == 200
        assert offered.json()["degraded"] is not None and offered.json()["offers"] == []

        apply_repository(settings)
        requested = whole_reload_requested(settings)
        assert requested is not None and "customer_contract" in requested
        assert client.get("/health/ready").status_code == 200
        # Before the reload the rows lack the feature; the reload writes it for everyone.
        source = open_feast_source(settings)
        assert source.read_account("C0001")["contract_ended_on"] is None
        materialize(loaded_until, settings, show_progress=False)
        assert source.read_account("C0001")["contract_ended_on"] == ""
        source.close()
        assert whole_reload_requested(settings) is None
        again = client.post(
            "/v1/offers", json=offers_body(invoice_id="INV-AGAIN"), headers=auth("renderer")
        )
        assert again.json()["degraded"] is None
