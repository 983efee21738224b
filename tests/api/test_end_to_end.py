"""Serve the simulated world with uvicorn on a free port, and ask for offers over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from core.settings import Settings
from tests.simulated_world import SimulatedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
CATALOG = ROOT / "catalog" / "offers.yaml"
RENDERER = "e2e-renderer-key-0123456789"
ADMIN = "e2e-admin-key-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def world(simulated_world: SimulatedWorld, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shared simulated world, with a decision log of this module's own."""
    log = tmp_path_factory.mktemp("e2e") / "offers.db"
    return simulated_world.settings.model_copy(update={"database_url": f"sqlite:///{log}"})


@pytest.fixture(scope="module")
def api(world: Settings) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "OFFERS_DATA_DIR": str(world.data_dir),
        "OFFERS_CATALOG": str(CATALOG),
        "OFFERS_FEATURES_DIR": str(world.features_dir),
        "OFFERS_FEAST_DIR": str(world.feast_dir),
        "OFFERS_DATABASE_URL": world.database_url,
        "MLFLOW_TRACKING_URI": world.mlflow_tracking_uri,
        "OFFERS_MLFLOW_ARTIFACT_ROOT": str(world.mlflow_artifact_root),
        "OFFERS_API_KEYS": f"{RENDERER}:renderer,{ADMIN}:admin",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                _, err = server.communicate(timeout=5)
                pytest.fail(f"offers serve did not become ready: {err.decode()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _customers_with_consent(world: Settings) -> list[str]:
    consents = pd.read_parquet(world.data_dir / "consents.parquet")
    latest = consents.sort_values("updated_at").groupby(["customer_id", "purpose"]).tail(1)
    granted = latest.pivot(index="customer_id", columns="purpose", values="granted").fillna(False)
    customers = pd.read_parquet(world.data_dir / "customers.parquet").set_index("customer_id")
    adults = customers.index[customers["birth_year"] <= 2000]
    chosen = granted[(granted["marketing"]) & (granted["profiling"])].index
    return sorted(set(chosen) & set(adults))[:20]


def _offers(base: str, invoice_id: str, customer_id: str, locale: str = "sv") -> httpx.Response:
    return httpx.post(
        f"{base}/v1/offers",
        json={
            "invoice_id": invoice_id,
            "customer_id": customer_id,
            "invoice_date": "2026-11-20",
            "locale": locale,
            "max_offers": 3,
        },
        headers={"Authorization": f"Bearer {RENDERER}"},
        timeout=10,
    )


def test_a_profiled_customer_gets_ranked_explained_offers_from_the_champion(
    world: Settings, api: str
) -> None:
    answers = [
        _offers(api, f"INV-E2E-{i}", customer).json()
        for i, customer in enumerate(_customers_with_consent(world))
    ]
    assert answers, "the simulated world has customers with marketing and profiling consent"
    assert {a["policy"] for a in answers} == {"model"}
    assert {a["model_version"] for a in answers} == {"offer-ranker/1"}
    shown = [offer for answer in answers for offer in answer["offers"]]
    assert shown, "some profiled customer gets an offer"
    for answer in answers:
        assert [o["rank"] for o in answer["offers"]] == list(range(1, len(answer["offers"]) + 1))
        assert answer["usage_summary"]["plan"]["plan_id"].startswith("PLAN_")
    for offer in shown:
        assert 0.0 <= offer["acceptance_probability"] <= 1.0
        assert offer["personalised"] is True
        assert offer["reasons"] and all(r["text"] for r in offer["reasons"])
        assert offer["contributions"], "profiling consent: the model's own contributions"


def test_the_same_invoice_gets_the_same_decision_and_events_are_stored(
    world: Settings, api: str
) -> None:
    customer = _customers_with_consent(world)[0]
    first = _offers(api, "INV-E2E-REPEAT", customer)
    again = _offers(api, "INV-E2E-REPEAT", customer)
    assert first.status_code == again.status_code == 200
    assert first.json()["decision_id"] == again.json()["decision_id"]
    assert first.json()["offers"] == again.json()["offers"]
    decision = first.json()
    if decision["offers"]:
        event = {
            "event_id": "EV-E2E-1",
            "decision_id": decision["decision_id"],
            "offer_id": decision["offers"][0]["offer_id"],
            "type": "impression",
            "occurred_at": "2026-11-20T08:00:00Z",
        }
        headers = {"Authorization": f"Bearer {RENDERER}"}
        assert httpx.post(f"{api}/v1/events", json=event, headers=headers).status_code == 202
        assert httpx.post(f"{api}/v1/events", json=event, headers=headers).status_code == 200


def test_usage_summary_and_unknown_customer_over_http(world: Settings, api: str) -> None:
    customer = _customers_with_consent(world)[0]
    headers = {"Authorization": f"Bearer {RENDERER}"}
    summary = httpx.get(
        f"{api}/v1/customers/{customer}/usage-summary",
        params={"invoice_date": "2026-11-20", "locale": "en"},
        headers=headers,
    )
    assert summary.status_code == 200
    assert summary.json()["detail_level"] in {"basic", "detailed"}
    missing = _offers(api, "INV-E2E-MISSING", "C9999999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert httpx.post(f"{api}/v1/offers", json={}).status_code == 401
