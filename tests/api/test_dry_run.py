"""POST /v1/offers with "dry_run": true: decided and answered as usual, logged, counted and stored
nowhere; events for it are refused, and the invoice's real request decides as if it never ran."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI

from serving.log_lines import JsonLinesFormatter
from tests.factories.api import auth, offers_body

RENDERER = auth("renderer")
MARKETING = auth("marketing")


def _decisions_counted(client: Any) -> float:
    metrics = client.get("/metrics").text
    lines = [line for line in metrics.splitlines() if line.startswith("offers_decisions_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_a_dry_run_answers_like_the_real_decision_and_says_so(client: Any) -> None:
    dry = client.post("/v1/offers", json=offers_body(dry_run=True), headers=RENDERER)
    assert dry.status_code == 200
    dry_body = dry.json()
    assert dry_body["dry_run"] is True
    assert dry_body["offers"], "the heavy user C0001 is offered something"

    real = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert "dry_run" not in real
    assert real["decision_id"] != dry_body["decision_id"]
    # The same invoice decided for real: the same offers, reasons and usage summary.
    for field in ("policy", "offers", "usage_summary", "consent"):
        assert real[field] == dry_body[field], field


def test_a_dry_run_is_stored_counted_and_logged_nowhere(
    app: FastAPI, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    experiment = {
        "key": "ranker-vs-rules",
        "variants": [
            {"name": "treatment", "weight": 0.5, "policy": "model"},
            {"name": "control", "weight": 0.5, "policy": "holdout"},
        ],
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-31T23:59:59Z",
    }
    assert client.post("/v1/experiments", json=experiment, headers=MARKETING).status_code == 201
    counted_before = _decisions_counted(client)
    with caplog.at_level(logging.INFO, logger="serving"):
        for number, customer in enumerate(("C0001", "C0002", "C0003", "C0004")):
            body = offers_body(invoice_id=f"INV-DRY-{number}", customer_id=customer, dry_run=True)
            answer = client.post("/v1/offers", json=body, headers=RENDERER).json()
            assert answer["dry_run"] is True
    lines = [JsonLinesFormatter().format(record) for record in caplog.records]
    assert not [line for line in lines if json.loads(line)["message"] == "decision"]
    assert _decisions_counted(client) == counted_before
    log = app.state.services.log
    assert all(log.find(f"INV-DRY-{number}") is None for number in range(4))
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert [(v["name"], v["customers"], v["decisions"]) for v in report["variants"]] == [
        ("treatment", 0, 0),
        ("control", 0, 0),
    ]


def test_events_for_a_dry_run_are_refused(client: Any) -> None:
    dry = client.post("/v1/offers", json=offers_body(dry_run=True), headers=RENDERER).json()
    event = {
        "event_id": "EV-DRY-1",
        "decision_id": dry["decision_id"],
        "offer_id": dry["offers"][0]["offer_id"],
        "type": "impression",
        "occurred_at": "2026-12-01T10:00:00Z",
    }
    refused = client.post("/v1/events", json=event, headers=RENDERER)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("unknown-decision")
    assert refused.json()["errors"][0]["loc"] == ["body", "decision_id"]


def test_after_a_dry_run_the_real_request_decides_and_is_replayed(client: Any) -> None:
    client.post("/v1/offers", json=offers_body(dry_run=True), headers=RENDERER)
    counted_before = _decisions_counted(client)
    first = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    again = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    assert first.content == again.content
    assert _decisions_counted(client) == counted_before + 1


def test_a_dry_run_of_a_decided_invoice_answers_its_stored_decision_unchanged(
    client: Any,
) -> None:
    real = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
    dry = client.post("/v1/offers", json=offers_body(dry_run=True), headers=RENDERER)
    assert dry.content == real.content
    assert "dry_run" not in dry.json()


@pytest.mark.parametrize("value", ["true", 1, None])
def test_dry_run_must_be_a_json_boolean(client: Any, value: Any) -> None:
    refused = client.post("/v1/offers", json=offers_body(dry_run=value), headers=RENDERER)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "dry_run"]
