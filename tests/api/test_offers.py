"""POST /v1/offers: validation, unknown customers, idempotency, degraded answers, the log."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

from serving.experiments import assign_variant
from serving.log_lines import JsonLinesFormatter
from serving.offers import Arm
from serving.offers_response import OffersResponse
from serving.scoring_model import ModelLoadFailed
from tests.factories.api import (
    FakeFeatures,
    FakeRegistry,
    auth,
    just_now,
    make_app,
    offers_body,
    opens_on_third_try,
    ranker,
    running,
    store_experiment,
)

RENDERER = auth("renderer")


def test_a_decision_follows_the_contract(client: Any) -> None:
    response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = OffersResponse.model_validate(response.json())
    assert uuid.UUID(body.decision_id).version == 7  # a UUIDv7: ids sort by when they were made
    assert (body.invoice_id, body.customer_id) == ("INV-2026-11-0001", "C0001")
    assert body.policy == "model"
    assert body.model_version == "offer-ranker/1"
    assert body.experiment is None and body.degraded is None
    assert body.consent.model_dump() == {
        "marketing": True,
        "profiling": True,
        "usage_insights": True,
    }
    assert 1 <= len(body.offers) <= 3
    assert [offer.rank for offer in body.offers] == list(range(1, len(body.offers) + 1))
    assert all(offer.contributions and offer.reasons for offer in body.offers)
    assert body.usage_summary is not None and body.usage_summary.detail_level == "detailed"


def test_max_offers_and_locale_are_honoured(client: Any) -> None:
    one = client.post("/v1/offers", json=offers_body(max_offers=1, locale="en"), headers=RENDERER)
    none = client.post(
        "/v1/offers", json=offers_body(invoice_id="INV-2", max_offers=0), headers=RENDERER
    )
    assert len(one.json()["offers"]) == 1
    assert one.json()["usage_summary"]["plan"]["title"] == "Mobile 5 GB"
    assert none.json()["offers"] == []


def test_no_profiling_consent_gets_the_segments_list_without_contributions(client: Any) -> None:
    body = client.post("/v1/offers", json=offers_body(customer_id="C0003"), headers=RENDERER).json()
    assert body["policy"] == "non_personalised"
    assert body["offers"] and all(not offer["contributions"] for offer in body["offers"])
    assert all(offer["personalised"] is False for offer in body["offers"])


def test_no_marketing_consent_gets_no_offers_but_a_usage_summary(client: Any) -> None:
    body = client.post("/v1/offers", json=offers_body(customer_id="C0004"), headers=RENDERER).json()
    assert (body["policy"], body["offers"]) == ("none", [])
    assert body["usage_summary"]["plan"]["plan_id"] == "PLAN_5GB"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"invoice_id": ""}, "invoice_id"),
        ({"invoice_id": "I" * 65}, "invoice_id"),
        ({"invoice_id": "INV 1"}, "invoice_id"),
        ({"customer_id": "C/0001"}, "customer_id"),
        ({"customer_id": 1234}, "customer_id"),
        ({"locale": "de"}, "locale"),
        ({"max_offers": 11}, "max_offers"),
        ({"max_offers": -1}, "max_offers"),
        ({"max_offers": "3"}, "max_offers"),
        ({"max_offers": True}, "max_offers"),
        ({"max_offers": 2.5}, "max_offers"),
        ({"invoice_date": "30/11/2026"}, "invoice_date"),
        # A number is not a date, though lax parsing would read it as seconds since 1970.
        ({"invoice_date": 0}, "invoice_date"),
        ({"invoice_date": 1764460800}, "invoice_date"),
        ({"invoice_date": "0"}, "invoice_date"),
        ({"channel": "print"}, "channel"),
    ],
)
def test_invalid_requests_are_422_problems_naming_the_field(
    client: Any, change: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/offers", json=offers_body(**change), headers=RENDERER)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] == "Unprocessable Content"
    assert field in problem["detail"]
    assert any(error["loc"][-1] == field for error in problem["errors"])
    assert all(set(error) == {"loc", "msg", "type"} for error in problem["errors"])


def test_max_offers_is_a_json_integer(client: Any) -> None:
    # JSON Schema's integer includes 2.0; the answer is the same as for 2.
    response = client.post("/v1/offers", json=offers_body(max_offers=2.0), headers=RENDERER)
    assert response.status_code == 200 and len(response.json()["offers"]) == 2


def test_missing_fields_are_named(client: Any) -> None:
    response = client.post("/v1/offers", json={"invoice_id": "INV-1"}, headers=RENDERER)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "customer_id"]]


def test_an_unknown_customer_is_404(client: Any) -> None:
    response = client.post("/v1/offers", json=offers_body(customer_id="C9999"), headers=RENDERER)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "customer C9999 is not known"


def test_a_customer_with_a_consent_row_but_no_account_is_404_on_every_route(
    client: Any, features: FakeFeatures
) -> None:
    # Erased, then back in the consent view alone (it is reloaded whole on every materialize):
    # nothing to decide from or summarise, and never a 500.
    consent_row, _, _ = features.rows["C0001"]
    features.rows["C0001"] = (consent_row, {}, {})
    single = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert single.status_code == 404
    assert single.json()["detail"] == "customer C0001 is not known"
    summary = client.get("/v1/customers/C0001/usage-summary", headers=RENDERER)
    assert summary.status_code == 404
    batch = client.post(
        "/v1/offers/batch",
        json={
            "invoices": [
                offers_body(invoice_id="INV-B1"),
                offers_body(invoice_id="INV-B2", customer_id="C0002"),
            ]
        },
        headers=RENDERER,
    ).json()["results"]
    assert [item["status"] for item in batch] == [404, 200]
    assert client.app.state.services.log.find("INV-2026-11-0001") is None


def test_the_same_invoice_gets_the_same_decision_even_if_asked_differently(
    client: Any, features: FakeFeatures
) -> None:
    first = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    reads = features.reads
    again = client.post("/v1/offers", json=offers_body(locale="en", max_offers=1), headers=RENDERER)
    assert again.status_code == 200
    assert again.content == first.content
    assert features.reads == reads  # answered from the log, no new decision


def test_the_same_invoice_for_another_customer_is_409(client: Any) -> None:
    client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    response = client.post("/v1/offers", json=offers_body(customer_id="C0002"), headers=RENDERER)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "INV-2026-11-0001" in response.json()["detail"]


def test_concurrent_requests_for_one_invoice_make_one_decision(client: Any) -> None:
    barrier = threading.Barrier(4)
    answers: list[bytes] = []

    def ask() -> None:
        barrier.wait()
        answers.append(client.post("/v1/offers", json=offers_body(), headers=RENDERER).content)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and len(set(answers)) == 1
    log = client.app.state.services.log
    assert log.find("INV-2026-11-0001").response_json.encode() == answers[0]


def test_an_invoice_date_far_from_today_is_refused_with_the_window(client: Any) -> None:
    answer = client.post(
        "/v1/offers", json=offers_body(invoice_date="2099-01-01"), headers=RENDERER
    )
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["type"].endswith("invoice-date-out-of-range")
    # A validation problem like any other: the field is named in `errors`.
    assert problem["errors"][0]["loc"] == ["body", "invoice_date"]
    assert (
        "2099-01-01" in problem["detail"] and "400 days back to 62 days ahead" in problem["detail"]
    )
    old = client.post("/v1/offers", json=offers_body(invoice_date="2020-01-01"), headers=RENDERER)
    assert old.status_code == 422
    assert client.app.state.services.log.find("INV-2026-11-0001") is None  # nothing stored


def test_an_invoice_named_like_the_warm_up_never_stops_the_next_start(tmp_path: Path) -> None:
    with running(make_app(tmp_path)) as first:
        answer = first.post("/v1/offers", json=offers_body(invoice_id="warm-up"), headers=RENDERER)
        assert answer.status_code == 200
    # The same decision log, started again: ready, and the stored decision is still the answer.
    with running(make_app(tmp_path)) as second:
        assert second.get("/health/ready").status_code == 200
        again = second.post("/v1/offers", json=offers_body(invoice_id="warm-up"), headers=RENDERER)
        assert again.status_code == 200
        assert again.json()["decision_id"] == answer.json()["decision_id"]
        # No request can carry the warm-up's own id.
        refused = second.post(
            "/v1/offers", json=offers_body(invoice_id="# warm-up #"), headers=RENDERER
        )
        assert refused.status_code == 422


def test_the_decision_is_stored_before_it_is_answered(client: Any) -> None:
    body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    log = client.app.state.services.log
    stored = log.find(body["invoice_id"])
    assert stored is not None and json.loads(stored.response_json) == body
    decisions, offers = log.tables.decisions, log.tables.decision_offers
    with log.engine.connect() as connection:
        row = connection.execute(sa.select(decisions)).one()._mapping
        shown = connection.execute(
            sa.select(offers.c.offer_id, offers.c.rank, offers.c.propensity).order_by(offers.c.rank)
        ).all()
    assert (row["policy"], row["model_version"]) == ("model", "offer-ranker/1")
    assert row["consent"]["profiling"] is True and row["consent"]["adult"] is True
    assert [(r.offer_id, r.rank) for r in shown] == [
        (offer["offer_id"], offer["rank"]) for offer in body["offers"]
    ]
    # A greedy decision while 5 % of decisions explore: each shown offer's propensity is the
    # greedy 95 % plus its chance in the random draw, which the log keeps exactly.
    assert row["log"]["explored"] is False
    assert all(0.95 < r.propensity <= 1.0 for r in shown)
    # The log keeps what the answer does not: every candidate considered and the churn risk.
    assert {c["offer_id"] for c in row["log"]["candidates"]} >= {
        o["offer_id"] for o in body["offers"]
    }
    assert "churn_risk" in row["log"]
    # A shown offer's record carries its figures; a blocked one only what is known of it.
    records = {c["offer_id"]: c for c in row["log"]["candidates"]}
    first = records[body["offers"][0]["offer_id"]]
    assert first["blocked_by"] is None and first["rank"] == 1
    assert first["acceptance_probability"] == pytest.approx(
        body["offers"][0]["acceptance_probability"], abs=1e-4
    )
    blocked = [c for c in records.values() if c["blocked_by"] is not None]
    assert blocked and all(None not in c.values() for c in blocked)
    assert all(c.get("rank") is None for c in blocked)
    # ...and nothing that the stored answer or the offers' rows already hold.
    assert not {"offers", "usage_summary", "consent_used", "policy"} & set(row["log"])


def test_no_answer_without_a_stored_decision(client: Any, monkeypatch: Any) -> None:
    def refuse(record: Any, superseding: str | None = None) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(client.app.state.services.log, "record", refuse)
    response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "disk" not in response.text and "Traceback" not in response.text


def test_an_unreachable_database_is_503_with_retry_after(client: Any, monkeypatch: Any) -> None:
    from sqlalchemy.exc import OperationalError

    def unreachable(invoice_id: str) -> Any:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("db host down"))

    monkeypatch.setattr(client.app.state.services.log, "find", unreachable)
    response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == (
        "the decision log database is unavailable; try again shortly"
    )
    assert "db host" not in response.text


def _pool_exhausted() -> Exception:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return PoolTimeout("QueuePool limit of size 8 overflow 32 reached")


def _interface_error() -> Exception:
    from sqlalchemy.exc import InterfaceError

    return InterfaceError("SELECT", {}, Exception("connection already closed"))


def _corrupt_file() -> Exception:
    import sqlite3

    return sqlite3.DatabaseError("file is not a database")


@pytest.mark.parametrize("failure", [_pool_exhausted, _interface_error, _corrupt_file])
@pytest.mark.parametrize("path", ["/v1/offers", "/v1/events"])
def test_every_failure_to_use_the_log_is_503_with_retry_after(
    client: Any, monkeypatch: Any, failure: Any, path: str
) -> None:
    log = client.app.state.services.log

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise failure()

    for name in ("find", "find_event"):
        monkeypatch.setattr(log, name, fails)
    body = offers_body()
    if path == "/v1/events":
        body = {
            "event_id": "EV-1",
            "decision_id": "00000000-0000-0000-0000-000000000000",
            "offer_id": "PLAN_15GB",
            "type": "impression",
            "occurred_at": "2026-11-20T10:00:00Z",
        }
    response = client.post(path, json=body, headers=RENDERER)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"].endswith("decision-log-unavailable")
    assert "QueuePool" not in response.text and "not a database" not in response.text


def test_a_corrupt_sqlite_log_file_is_503_not_500(client: Any) -> None:
    """The log's file overwritten while the API runs: every request that needs it is 503."""
    log = client.app.state.services.log
    log.engine.dispose()
    path = Path(log.engine.url.database)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a SQLite database" * 200)
    response = client.post("/v1/offers", json=offers_body(invoice_id="INV-X"), headers=RENDERER)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_a_sqlite_log_that_fails_on_the_request_path_is_503(client: Any) -> None:
    log = client.app.state.services.log
    with log.engine.begin() as connection:  # a log whose file lost its decisions table
        connection.exec_driver_sql("DROP TABLE decision_offers")
        connection.exec_driver_sql("DROP TABLE decisions")
    response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "no such table" not in response.text


def test_a_failing_feature_store_gives_a_degraded_fallback_not_an_error(
    client: Any, features: FakeFeatures
) -> None:
    features.fail = "timeout"
    response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 200
    body = response.json()
    assert body["policy"] == "fallback"
    assert body["degraded"] == "feature_store_unavailable"
    assert body["offers"] == [] and body["usage_summary"] is None
    assert client.app.state.services.log.find(body["invoice_id"]) is not None


def _logged(client: Any, table: str, invoice_id: str) -> list[dict[str, Any]]:
    log = client.app.state.services.log
    rows = getattr(log.tables, table)
    with log.engine.connect() as connection:
        query = sa.select(rows).where(rows.c.invoice_id == invoice_id)
        return [dict(row) for row in connection.execute(query).mappings()]


def _accept(decision: dict[str, Any], offer_id: str, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "decision_id": decision["decision_id"],
        "offer_id": offer_id,
        "type": "accept",
        "occurred_at": just_now(),
    }


def test_a_degraded_answer_is_decided_afresh_once_the_store_is_back(
    client: Any, features: FakeFeatures
) -> None:
    features.fail = "timeout"
    down = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    still_down = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert still_down.content == down.content  # one degraded decision, not one per retry
    nothing_shown = client.post(
        "/v1/events", json=_accept(down.json(), "PLAN_1GB", "EV-0"), headers=RENDERER
    )
    assert nothing_shown.json()["errors"][0]["type"] == "offer_not_in_decision"
    features.fail = None
    back = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    again = client.post("/v1/offers", json=offers_body(max_offers=1), headers=RENDERER)

    degraded, fresh = down.json(), back.json()
    assert (degraded["degraded"], degraded["offers"]) == ("feature_store_unavailable", [])
    assert (fresh["policy"], fresh["degraded"]) == ("model", None) and fresh["offers"]
    assert fresh["decision_id"] != degraded["decision_id"]
    assert again.content == back.content  # from now on the fresh decision is replayed
    invoice = fresh["invoice_id"]
    assert [row["decision_id"] for row in _logged(client, "decisions", invoice)] == [
        fresh["decision_id"]
    ]
    # The degraded answer stays in the log, saying when and by which decision it was replaced.
    (audit,) = _logged(client, "superseded_decisions", invoice)
    assert (audit["decision_id"], audit["superseded_by"]) == (
        degraded["decision_id"],
        fresh["decision_id"],
    )
    assert json.loads(audit["response"]) == degraded
    # Events name the fresh decision; the degraded one showed nothing anyone could accept.
    offer = fresh["offers"][0]["offer_id"]
    accepted = client.post("/v1/events", json=_accept(fresh, offer, "EV-1"), headers=RENDERER)
    on_degraded = client.post("/v1/events", json=_accept(degraded, offer, "EV-2"), headers=RENDERER)
    assert accepted.status_code == 202
    assert on_degraded.status_code == 422
    assert on_degraded.json()["errors"][0]["type"] == "unknown_decision"


def test_a_decision_made_with_the_store_up_is_replayed_while_it_is_down(
    client: Any, features: FakeFeatures
) -> None:
    first = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    features.fail = "timeout"
    reads = features.reads
    again = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert again.status_code == 200 and again.content == first.content
    assert features.reads == reads
    assert _logged(client, "superseded_decisions", first.json()["invoice_id"]) == []


def test_a_degraded_answer_with_the_rules_offers_is_replayed(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.champions["offer-ranker"] = ModelLoadFailed("registry down")
    app = make_app(tmp_path, registry=registry)
    with running(app) as client:
        first = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
        registry.champions["offer-ranker"] = ranker()
        app.state.services.models.reload()
        again = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    body = first.json()
    assert (body["policy"], body["degraded"]) == ("fallback", "model_unavailable")
    assert body["offers"]  # shown, and perhaps accepted: this answer is the invoice's
    assert again.content == first.content


def test_the_feature_store_is_closed_when_the_app_stops(tmp_path: Path) -> None:
    features = FakeFeatures()
    with running(make_app(tmp_path, features=features)) as client:
        assert client.post("/v1/offers", json=offers_body(), headers=RENDERER).status_code == 200
        assert not features.closed
    assert features.closed


def test_a_feature_store_that_never_opened_gives_degraded_answers(tmp_path: Path) -> None:
    def cannot_open(settings: Any) -> Any:
        raise ConnectionError("no store")

    with running(make_app(tmp_path, open_features=cannot_open)) as client:
        response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 200
    assert response.json()["degraded"] == "feature_store_unavailable"


def test_without_a_champion_the_rules_decide(tmp_path: Path) -> None:
    with running(make_app(tmp_path, registry=FakeRegistry.empty())) as client:
        body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert (body["policy"], body["model_version"], body["degraded"]) == ("rules", None, None)
    assert body["offers"] and all(
        offer["acceptance_probability"] is None for offer in body["offers"]
    )


def test_a_model_that_failed_to_load_gives_a_fallback_decided_by_rules(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.champions["offer-ranker"] = ModelLoadFailed("registry down")
    with running(make_app(tmp_path, registry=registry)) as client:
        body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    with running(make_app(tmp_path / "none", registry=FakeRegistry.empty())) as client:
        rules = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert (body["policy"], body["model_version"], body["degraded"]) == (
        "fallback",
        None,
        "model_unavailable",
    )
    # The rules still choose the offers: the same ones as without any model.
    assert body["offers"] and body["offers"] == rules["offers"]


def _challenger_experiment(policy: str) -> dict[str, Any]:
    return {
        "key": "challenger",
        "variants": [{"name": "challenger", "weight": 1.0, "policy": policy}],
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-31T00:00:00Z",
    }


def test_a_challenger_loaded_on_another_worker_is_loaded_on_first_use(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.versions[("offer-ranker", "5")] = ranker("5")
    app = make_app(tmp_path, registry=registry)
    with running(app) as client:
        created = client.post(
            "/v1/experiments", json=_challenger_experiment("model:5"), headers=auth("admin")
        )
        assert created.status_code == 201
        # This worker did not create the experiment: it has no challenger loaded.
        holder = app.state.services.models
        holder.current = replace(holder.current, challengers={})
        body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert (body["policy"], body["model_version"], body["degraded"]) == (
        "model",
        "offer-ranker/5",
        None,
    )


def test_a_missing_challenger_is_asked_for_at_most_every_few_seconds(
    tmp_path: Path, monkeypatch: Any
) -> None:
    registry = FakeRegistry()
    app = make_app(tmp_path, registry=registry)
    with running(app) as client:
        store_experiment(client.app, _challenger_experiment("model:9"))
        loads = registry.loads
        answers = [
            client.post(
                "/v1/offers", json=offers_body(invoice_id=f"INV-{n}"), headers=RENDERER
            ).json()
            for n in range(3)
        ]
        assert registry.loads == loads + 1  # one try for three invoices
        assert all(
            (a["policy"], a["model_version"], a["degraded"])
            == ("model", "offer-ranker/1", "challenger_unavailable")
            for a in answers
        )
        registry.versions[("offer-ranker", "9")] = ranker("9")
        retries = app.state.services.offers.challenger_retries
        monkeypatch.setattr(retries, "interval_seconds", 0.0)
        later = client.post(
            "/v1/offers", json=offers_body(invoice_id="INV-LATER"), headers=RENDERER
        ).json()
    assert (later["model_version"], later["degraded"]) == ("offer-ranker/9", None)


def test_a_challenger_load_that_raises_still_answers_with_the_champion(
    tmp_path: Path, monkeypatch: Any
) -> None:
    app = make_app(tmp_path)
    with running(app) as client:
        store_experiment(client.app, _challenger_experiment("model:9"))

        def broken(policies: Any) -> Any:
            raise RuntimeError("lightgbm could not allocate")

        monkeypatch.setattr(app.state.services.models, "add_challengers", broken)
        response = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert response.status_code == 200
    body = response.json()
    assert (body["model_version"], body["degraded"]) == ("offer-ranker/1", "challenger_unavailable")


def test_a_feature_store_that_comes_back_is_reopened_by_an_offers_request(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import serving.app

    monkeypatch.setattr(serving.app, "FEATURE_RETRY_SECONDS", 0.0)
    store = FakeFeatures()
    open_features, attempts = opens_on_third_try(store)
    app = make_app(tmp_path, open_features=open_features)
    with running(app) as client:
        down = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
        back = client.post(
            "/v1/offers", json=offers_body(invoice_id="INV-BACK"), headers=RENDERER
        ).json()
        assert app.state.services.features is store
    assert (down["policy"], down["degraded"]) == ("fallback", "feature_store_unavailable")
    assert (back["policy"], back["degraded"]) == ("model", None)
    assert len(attempts) == 3


def test_a_declined_offer_is_not_shown_again_for_the_next_invoices(client: Any) -> None:
    first = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    declined = first["offers"][0]["offer_id"]
    event = {
        "event_id": "EV-1",
        "decision_id": first["decision_id"],
        "offer_id": declined,
        "type": "decline",
        "occurred_at": just_now(),
    }
    assert client.post("/v1/events", json=event, headers=RENDERER).status_code == 202
    second = client.post(
        "/v1/offers", json=offers_body(invoice_id="INV-2026-12-0001"), headers=RENDERER
    ).json()
    assert declined not in [offer["offer_id"] for offer in second["offers"]]


def test_a_running_experiment_assigns_the_variant_and_its_policy(client: Any) -> None:
    experiment = {
        "key": "ranker-vs-rules",
        "variants": [
            {"name": "treatment", "weight": 0.5, "policy": "model"},
            {"name": "control", "weight": 0.5, "policy": "holdout"},
        ],
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-31T23:59:59Z",
    }
    created = client.post("/v1/experiments", json=experiment, headers=auth("marketing"))
    assert created.status_code == 201
    from serving.api.schemas import ExperimentCreate

    variants = ExperimentCreate.model_validate(experiment).variants
    for number, customer in enumerate(("C0001", "C0002")):
        body = client.post(
            "/v1/offers",
            json=offers_body(invoice_id=f"INV-X-{number}", customer_id=customer),
            headers=RENDERER,
        ).json()
        variant = assign_variant("ranker-vs-rules", customer, variants)
        assert body["experiment"] == {"key": "ranker-vs-rules", "variant": variant.name}
        if variant.policy == "holdout":
            assert (body["policy"], body["offers"]) == ("holdout", [])
        else:
            assert body["policy"] == "model"
    outside = client.post(
        "/v1/offers",
        json=offers_body(invoice_id="INV-OLD", invoice_date="2026-10-31"),
        headers=RENDERER,
    ).json()
    assert outside["experiment"] is None


def test_routes_that_compute_run_in_the_thread_pool() -> None:
    from serving.api.routes import admin, events, experiments, health, offers, pages, usage

    routers = [
        *(module.router for module in (offers, usage, events, experiments, pages, admin, health)),
        experiments.page_router,
    ]
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    asynchronous = {route.path for route in routes if inspect.iscoroutinefunction(route.endpoint)}
    # The liveness probe does nothing; POST /v1/offers chooses per request (the tests below).
    assert asynchronous == {"/health/live", "/v1/offers"}


class LoopWatchingFeatures(FakeFeatures):
    """Records, per consent read, whether it ran on the event loop's thread."""

    def __init__(self, bounds_reads: bool) -> None:
        super().__init__()
        self.bounds_reads = bounds_reads
        self.recently_failed = False
        self.on_loop: list[bool] = []

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return super().read_consent(customer_id)


@pytest.mark.parametrize(
    ("bounds_reads", "recently_failed", "on_loop"),
    [(True, False, True), (False, False, False), (True, True, False)],
)
def test_a_decision_runs_on_the_loop_only_when_nothing_on_its_path_can_wait(
    tmp_path: Path, bounds_reads: bool, recently_failed: bool, on_loop: bool
) -> None:
    features = LoopWatchingFeatures(bounds_reads)
    features.recently_failed = recently_failed
    with running(make_app(tmp_path, features=features)) as client:
        answer = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert answer.status_code == 200 and answer.json()["policy"] == "model"
    # A store that bounds its own reads and answers, and a SQLite log: on the loop; a store that
    # needs a watchdog or has just failed: the thread pool.
    assert features.on_loop == [on_loop]


def test_an_arm_whose_challenger_is_not_loaded_is_decided_in_the_thread_pool(
    tmp_path: Path,
) -> None:
    features = LoopWatchingFeatures(bounds_reads=True)
    with running(make_app(tmp_path, features=features)) as client:
        services = client.app.state.services
        champion = Arm("model", None)
        challenger = Arm("model:offer-ranker/2", None)
        assert services.offers.answers_without_waiting(champion)
        # Loading a challenger from the registry can take seconds: never on the loop.
        assert not services.offers.answers_without_waiting(challenger)
        services.feature_store.source = None  # a store to reopen: likewise
        assert not services.offers.answers_without_waiting(champion)


def test_a_decision_is_logged_as_one_json_line_without_personal_data(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving"):
        body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
        client.post(
            "/v1/offers",
            json=offers_body(invoice_id="INV-9", contact="anna.svensson@example.se"),
            headers=RENDERER,
        )
    lines = [JsonLinesFormatter().format(record) for record in caplog.records]
    decisions = [json.loads(line) for line in lines if '"decision"' in line]
    assert len(decisions) == 1
    entry = decisions[0]
    assert entry["decision_id"] == body["decision_id"]
    assert entry["policy"] == "model" and entry["latency_ms"] > 0
    text = "\n".join(lines)
    assert "anna.svensson" not in text and "@" not in text
    assert "C0001" not in text  # no customer id either: the decision id leads to it
