"""Personal data stays out of the logs: recognisable canary values go through every error path."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from serving.log_lines import JsonLinesFormatter
from tests.factories.api import FakeFeatures, auth, customers, make_app, offers_body, running
from tests.factories.decision import consent, heavy_user, profile

CANARY_CUSTOMER = "CANARY-CUST-7731"
CANARY_INVOICE = "CANARY-INV-5519"
CANARY_AGE = 73
RENDERER = auth("renderer")


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged (the test client's own request lines, from httpx, are not)."""
    formatter = JsonLinesFormatter()
    return "\n".join(
        formatter.format(record) for record in caplog.records if record.name != "httpx"
    )


def test_no_canary_reaches_the_logs_on_any_path(
    tmp_path: Path, logged: Any, monkeypatch: Any
) -> None:
    from sqlalchemy.exc import OperationalError

    rows = customers()
    rows[CANARY_CUSTOMER] = (consent(), heavy_user(), profile(age=CANARY_AGE, satisfaction=1.5))
    features = FakeFeatures(rows)
    with running(make_app(tmp_path, features=features)) as client:
        body = offers_body(customer_id=CANARY_CUSTOMER, invoice_id=CANARY_INVOICE)
        assert client.post("/v1/offers", json=body, headers=RENDERER).status_code == 200
        # 404: a customer the store does not know, by path.
        unknown = f"/v1/customers/{CANARY_CUSTOMER}X/usage-summary"
        assert client.get(unknown, headers=RENDERER).status_code == 404
        # 422: the canary in an invalid body.
        bad = offers_body(customer_id=CANARY_CUSTOMER, invoice_id=CANARY_INVOICE, locale="xx")
        assert client.post("/v1/offers", json=bad, headers=RENDERER).status_code == 422
        # A consent answer for the canary, and one for a customer the store does not know.
        for number, customer in enumerate((CANARY_CUSTOMER, f"{CANARY_CUSTOMER}X")):
            answer = {
                "change_id": f"CANARY-CHANGE-{number}",
                "customer_id": customer,
                "purpose": "profiling",
                "granted": False,
                "updated_at": "2026-11-20T10:00:00Z",
            }
            consent_answer = client.post("/v1/consents", json=answer, headers=auth("consent"))
            assert consent_answer.status_code == 202
        # 409: the same invoice for another customer.
        other = offers_body(customer_id="C0001", invoice_id=CANARY_INVOICE)
        assert client.post("/v1/offers", json=other, headers=RENDERER).status_code == 409
        # 503 and 500: failures whose messages quote the canary.
        log = client.app.state.services.log

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError("SELECT", {"id": CANARY_CUSTOMER}, Exception(CANARY_CUSTOMER))

        monkeypatch.setattr(log, "find", unreachable)
        retry = offers_body(customer_id=CANARY_CUSTOMER, invoice_id=f"{CANARY_INVOICE}-2")
        assert client.post("/v1/offers", json=retry, headers=RENDERER).status_code == 503

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"customer {CANARY_CUSTOMER} aged {CANARY_AGE} broke it")

        monkeypatch.setattr(log, "find", broken)
        failed = client.post("/v1/offers", json=retry, headers=RENDERER)
        assert failed.status_code == 500
        usage = f"/v1/customers/{CANARY_CUSTOMER}/usage-summary"
        monkeypatch.setattr(features, "read_consent", broken)
        assert client.get(usage, headers=RENDERER).status_code in {500, 503}
    text = _lines(logged)
    assert "unhandled error" in text and "decision log database unavailable" in text
    for canary in (CANARY_CUSTOMER, CANARY_INVOICE, f"aged {CANARY_AGE}", "Traceback"):
        assert canary not in text, canary
    # Errors are located by route template and frames, not by path or message.
    assert "/v1/customers/{customer_id}/usage-summary" in text


def test_the_answer_and_the_log_name_age_without_its_value(tmp_path: Path) -> None:
    """Contributions say that age or satisfaction weighed, never the customer's value."""
    from serving.decision.scoring import UNDISCLOSED_VALUES

    rows = {"C0001": (consent(), heavy_user(), profile(age=CANARY_AGE, satisfaction=1.5))}
    with running(make_app(tmp_path, features=FakeFeatures(rows))) as client:
        answer = client.post("/v1/offers", json=offers_body(), headers=RENDERER)
        stored = client.app.state.services.log.find(answer.json()["invoice_id"])
    contributions = [c for offer in answer.json()["offers"] for c in offer["contributions"]]
    assert contributions, "the profiled customer's offers are explained"
    for contribution in contributions:
        if contribution["feature"] in UNDISCLOSED_VALUES:
            assert contribution["value"] is None
    assert f'"value":{CANARY_AGE}' not in stored.response_json.replace(" ", "")
    assert '"value":1.5' not in stored.response_json.replace(" ", "")
