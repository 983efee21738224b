"""The real ``offers serve`` keeps personal data out of what it prints: customers, invoices and
free-text values that are easy to recognise go through 404, 422, 409 and 503 answers (the online
store killed, the decision log's PostgreSQL cut off), and every line the server writes, on stdout
and stderr, is a JSON object that quotes none of them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import httpx
import pytest

from tests.factories.api import (
    KEYS,
    api_settings,
    build_feast_store,
    customers,
    just_now,
    offers_body,
)
from tests.factories.decision import consent, heavy_user, profile
from tests.faults.services import (
    RENDERER,
    RENDERER_KEY,
    BlackHoleProxy,
    OffersServer,
    PrivateRedis,
    offers_serve_command,
    require_program,
    server_environment,
    split_cores,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults, pytest.mark.postgres]

CANARY_CUSTOMER = "CANARY-CUST-7731"
CANARY_UNKNOWN = "CANARY-CUST-0404"
CANARY_INVOICE = "CANARY-INV-5519"
CANARY_REGION = "CANARY-REGION-Vindeln"
CANARY_EVENT = "CANARY-EVENT-2208"
CANARY_CHANGE = "CANARY-CHANGE-3141"
CANARY_DESCRIPTION = "CANARY-DESCRIPTION-kundens fritext"
CANARIES = (
    CANARY_CUSTOMER,
    CANARY_UNKNOWN,
    CANARY_INVOICE,
    CANARY_REGION,
    CANARY_EVENT,
    CANARY_CHANGE,
    CANARY_DESCRIPTION,
    "CANARY",  # any part of any of them
)
CONSENT = {"Authorization": f"Bearer {KEYS['consent']}"}
MARKETING = {"Authorization": f"Bearer {KEYS['marketing']}"}


def _consent_answer(change_id: str, customer_id: str) -> dict[str, Any]:
    return {
        "change_id": change_id,
        "customer_id": customer_id,
        "purpose": "profiling",
        "granted": False,
        "updated_at": "2026-11-20T10:00:00Z",
    }


def _event(event_id: str, decision_id: str, offer_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "decision_id": decision_id,
        "offer_id": offer_id,
        "type": "impression",
        "occurred_at": just_now(),
    }


def test_offers_serve_prints_only_json_lines_and_no_canary_on_any_path(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    rows = customers()
    rows[CANARY_CUSTOMER] = (consent(), heavy_user(), profile(region=CANARY_REGION))
    redis = PrivateRedis(require_program("redis-server"), tmp_path / "redis")
    redis.start()
    upstream = urlparse(postgres_url)
    proxy = BlackHoleProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432))
    user = quote(upstream.username or "postgres")
    password = f":{quote(upstream.password)}" if upstream.password else ""
    database_url = (
        f"postgresql://{user}{password}@127.0.0.1:{proxy.port}{upstream.path}"
        f"?options=-csearch_path%3D{pg_schema}"
    )
    registry = tmp_path / "mlruns"
    log_path = tmp_path / "server.log"
    try:
        store = api_settings(
            tmp_path,
            features_dir=tmp_path / "features",
            feast_dir=tmp_path / "feast",
            online_store=redis.url,
        )
        build_feast_store(store, rows=rows)
        environment = server_environment(
            {
                "MLFLOW_TRACKING_URI": f"sqlite:///{registry / 'mlflow.db'}",
                "OFFERS_MLFLOW_ARTIFACT_ROOT": str(registry / "artifacts"),
                "OFFERS_DATA_DIR": str(store.data_dir),
                "OFFERS_FEATURES_DIR": str(store.features_dir),
                "OFFERS_FEAST_DIR": str(store.feast_dir),
                "OFFERS_ONLINE_STORE": store.online_store,
                "OFFERS_DATABASE_URL": database_url,
                "OFFERS_DATABASE_TIMEOUT_MS": "500",
                "OFFERS_API_KEYS": ",".join(
                    [f"{RENDERER_KEY}:renderer"]
                    + [f"{KEYS[role]}:{role}" for role in ("consent", "marketing")]
                ),
            }
        )
        with OffersServer(
            environment, log_path, split_cores().server, command=offers_serve_command
        ) as server:
            server.start()
            statuses = _drive(server.base_url, redis, proxy)
    finally:
        proxy.close()
        redis.kill()

    # Every path the test meant to take was taken.
    assert statuses == {
        "decided": 200,
        "unknown customer": 404,
        "unknown customer's usage": 404,
        "bad locale": 422,
        "bad customer id in the path": 422,
        "unknown decision": 422,
        "bad experiment": 422,
        "invoice of another customer": 409,
        "consent": 202,
        "consent of an unknown customer": 202,
        "event": 202,
        "store down: offers": 200,
        "store down: usage": 503,
        "store down: consent": 503,
        "log down: offers": 503,
        "log down: event": 503,
        "log down: consent": 503,
    }
    text = log_path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not not_json, not_json[:5]
    logged = [json.loads(line) for line in lines]
    messages = {entry["message"] for entry in logged}
    # The failures were logged (so the absence of canaries below says something).
    assert "decision" in messages
    assert "decision log database unavailable" in messages
    assert "decision log does not answer: circuit open" in messages
    for canary in CANARIES:
        assert canary not in text, canary


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _drive(base_url: str, redis: PrivateRedis, proxy: BlackHoleProxy) -> dict[str, int]:
    """Each path once; the status each answered."""
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=base_url, headers=RENDERER, timeout=30.0) as client:

        def post(name: str, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
            response = client.post(path, json=body, **kwargs)
            statuses[name] = response.status_code
            return response

        def get(name: str, path: str) -> httpx.Response:
            response = client.get(path)
            statuses[name] = response.status_code
            return response

        canary_invoice = offers_body(customer_id=CANARY_CUSTOMER, invoice_id=CANARY_INVOICE)
        decided = post("decided", "/v1/offers", canary_invoice).json()
        post(
            "unknown customer",
            "/v1/offers",
            offers_body(customer_id=CANARY_UNKNOWN, invoice_id=f"{CANARY_INVOICE}-404"),
        )
        get("unknown customer's usage", f"/v1/customers/{CANARY_UNKNOWN}/usage-summary")
        post("bad locale", "/v1/offers", {**canary_invoice, "locale": CANARY_REGION})
        get("bad customer id in the path", f"/v1/customers/{CANARY_CUSTOMER}!/usage-summary")
        post(
            "unknown decision",
            "/v1/events",
            _event(CANARY_EVENT, str(uuid.uuid4()), "PLAN_30GB"),
        )
        post(
            "bad experiment",
            "/v1/experiments",
            {"key": CANARY_CUSTOMER, "description": CANARY_DESCRIPTION, "variants": []},
            headers=MARKETING,
        )
        post(
            "invoice of another customer",
            "/v1/offers",
            offers_body(customer_id="C0001", invoice_id=CANARY_INVOICE),
        )
        post(
            "consent",
            "/v1/consents",
            _consent_answer(CANARY_CHANGE, CANARY_CUSTOMER),
            headers=CONSENT,
        )
        post(
            "consent of an unknown customer",
            "/v1/consents",
            _consent_answer(f"{CANARY_CHANGE}-404", CANARY_UNKNOWN),
            headers=CONSENT,
        )
        shown = decided["offers"][0]["offer_id"]
        post("event", "/v1/events", _event(CANARY_EVENT, decided["decision_id"], shown))

        redis.kill()
        post(
            "store down: offers",
            "/v1/offers",
            offers_body(customer_id=CANARY_CUSTOMER, invoice_id=f"{CANARY_INVOICE}-S"),
        )
        get("store down: usage", f"/v1/customers/{CANARY_CUSTOMER}/usage-summary")
        post(
            "store down: consent",
            "/v1/consents",
            _consent_answer(f"{CANARY_CHANGE}-S", CANARY_CUSTOMER),
            headers=CONSENT,
        )

        proxy.black_hole()
        for attempt in range(4):  # past the deadline three times, then the circuit is open
            post(
                "log down: offers",
                "/v1/offers",
                offers_body(customer_id=CANARY_CUSTOMER, invoice_id=f"{CANARY_INVOICE}-D{attempt}"),
            )
        post(
            "log down: event",
            "/v1/events",
            _event(f"{CANARY_EVENT}-D", decided["decision_id"], shown),
        )
        post(
            "log down: consent",
            "/v1/consents",
            _consent_answer(f"{CANARY_CHANGE}-D", CANARY_CUSTOMER),
            headers=CONSENT,
        )
        proxy.forward()
        wait_for(lambda: client.get("/health/live").status_code == 200, 10, "a live server")
    return statuses
