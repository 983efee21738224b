"""Health, readiness, metrics and the server-timing header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.factories.api import (
    FakeFeatures,
    FakeRegistry,
    auth,
    make_app,
    offers_body,
    opens_on_third_try,
    running,
)

RENDERER = auth("renderer")


def test_live_is_200(tmp_path: Path) -> None:
    with running(make_app(tmp_path)) as client:
        assert client.get("/health/live").json() == {"status": "live"}


def test_ready_reports_the_models_once_everything_is_loaded(tmp_path: Path) -> None:
    with running(make_app(tmp_path)) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "model_version": "offer-ranker/1",
        "churn_model_version": "churn-risk/1",
    }


def test_ready_with_rules_only_when_no_model_is_registered(tmp_path: Path) -> None:
    with running(make_app(tmp_path, registry=FakeRegistry.empty())) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200 and response.json()["model_version"] is None


def test_not_ready_until_the_feature_store_opens(tmp_path: Path, monkeypatch: Any) -> None:
    import serving.app

    monkeypatch.setattr(serving.app, "FEATURE_RETRY_SECONDS", 0.0)
    open_features, _ = opens_on_third_try(FakeFeatures())
    with running(make_app(tmp_path, open_features=open_features)) as client:
        first = client.get("/health/ready")
        assert first.status_code == 503
        assert first.headers["content-type"] == "application/problem+json"
        assert first.json()["detail"] == "the feature store is not open"
        assert client.get("/health/ready").status_code == 200  # third attempt opens it
        body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert body["degraded"] is None and body["policy"] == "model"


def test_readiness_says_why_a_store_an_earlier_release_applied_is_not_opened(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import serving.app
    from features.online import FeaturesNotApplied

    monkeypatch.setattr(serving.app, "FEATURE_RETRY_SECONDS", 0.0)
    failures: list[Exception] = [
        FeaturesNotApplied("customer_contract", ["contract_ended_on"]),
        FeaturesNotApplied("customer_contract", ["contract_ended_on"]),
        ConnectionError("store not there"),
    ]

    def open_features(settings: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return FakeFeatures()

    with running(make_app(tmp_path, open_features=open_features)) as client:
        first = client.get("/health/ready").json()["detail"]
        assert first.startswith("the feature store is not open: feature view customer_contract ")
        assert "has no feature(s) contract_ended_on" in first
        assert "`offers features apply`" in first
        # Another failure after it: the reason given no longer holds.
        assert client.get("/health/ready").json()["detail"] == "the feature store is not open"
        assert client.get("/health/ready").status_code == 200


def test_not_ready_while_the_open_store_does_not_answer_a_read(tmp_path: Path) -> None:
    """Readiness reads the store as a request does: an open store that fails its reads (a
    broken file, a lock never released) is not ready, and is ready again once it answers."""
    features = FakeFeatures()
    with running(make_app(tmp_path, features=features)) as client:
        assert client.get("/health/ready").status_code == 200
        features.fail = "timeout"
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["detail"] == "the feature store does not answer (timeout)"
        features.fail = None
        assert client.get("/health/ready").status_code == 200


def test_a_head_probe_gets_the_status_without_a_body(tmp_path: Path) -> None:
    """Load balancers and uptime checkers often probe with HEAD."""
    features = FakeFeatures()
    with running(make_app(tmp_path, features=features)) as client:
        ready = client.head("/health/ready")
        assert (ready.status_code, ready.content) == (200, b"")
        assert client.head("/health/live").status_code == 200
        features.fail = "timeout"
        assert client.head("/health/ready").status_code == 503
        assert client.head("/health/live").status_code == 200


def test_metrics_count_decisions_degraded_answers_and_step_times(tmp_path: Path) -> None:
    features = FakeFeatures()
    with running(make_app(tmp_path, features=features)) as client:
        client.post("/v1/offers", json=offers_body(), headers=RENDERER)
        client.post("/v1/offers", json=offers_body(), headers=RENDERER)  # a replay: not counted
        features.fail = "timeout"
        client.post("/v1/offers", json=offers_body(invoice_id="INV-2"), headers=RENDERER)
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'offers_decisions_total{policy="model"} 1.0' in text
    assert 'offers_decisions_total{policy="fallback"} 1.0' in text
    assert 'offers_degraded_answers_total{reason="feature_store_unavailable"} 1.0' in text
    for step in ("lookup", "decide", "log", "total"):
        assert f'offers_step_seconds_count{{step="{step}"}} 2.0' in text


def test_every_response_carries_server_timing(tmp_path: Path) -> None:
    with running(make_app(tmp_path)) as client:
        timing = client.post("/v1/offers", json=offers_body(), headers=RENDERER).headers[
            "server-timing"
        ]
    name, duration = timing.split(";")
    assert name == "app" and float(duration.removeprefix("dur=")) > 0
