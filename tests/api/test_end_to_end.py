"""Serve the simulated world with uvicorn on a free port, and ask for offers over real HTTP; and
two uvicorn workers that both follow a promotion in the registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from core.settings import Settings
from tests.factories.api import just_now
from tests.simulated_world import SimulatedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
CATALOG = ROOT / "catalog" / "offers.yaml"
RENDERER = "e2e-renderer-key-0123456789"
ADMIN = "e2e-admin-key-0123456789"
Entry = dict[str, Any]


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
            "occurred_at": just_now(),
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


def _logged(path: Path, message: str | None = None, field: str | None = None) -> list[Entry]:
    """The JSON log lines of the server's stderr with this message, or with this field."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [
        entry
        for entry in entries
        if (message is None or entry.get("message") == message)
        and (field is None or field in entry)
    ]


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_two_workers_both_follow_a_promotion_within_the_poll_interval(tmp_path: Path) -> None:
    """An admin reload reaches one worker; a promotion must reach every worker by itself."""
    from tests.factories.training import log_version
    from training import tracking

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        mlflow_artifact_root=tmp_path / "mlruns" / "artifacts",
    )
    log_version(settings, "offer-ranker", {"val_ndcg_at_3": 0.6})
    log_version(settings, "churn-risk", {"val_auc": 0.7})
    tracking.set_champion("offer-ranker", "1", settings)
    tracking.set_champion("churn-risk", "1", settings)
    port = _free_port()
    stderr = tmp_path / "serve.log"
    env = {
        **os.environ,
        "OFFERS_CATALOG": str(CATALOG),
        # No feature store: the models are what is checked, through the logs and /metrics.
        "OFFERS_FEAST_DIR": str(tmp_path / "feast"),
        "OFFERS_DATABASE_URL": f"sqlite:///{tmp_path / 'offers.db'}",
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "OFFERS_MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
        "OFFERS_API_KEYS": f"{ADMIN}:admin",
        "OFFERS_MODEL_POLL_SECONDS": "1",
    }
    with stderr.open("wb") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            # The lifespan's last line ("ready", here "started without the feature store"):
            # each worker's follower runs from then on.
            _wait_until(
                lambda: len(_logged(stderr, field="startup_ms")) == 2 or server.poll() is not None,
                120,
                "two workers started",
            )
            assert server.poll() is None, stderr.read_text()[-2000:]
            # Version 2 from version 1's files: a new version as the registry sees it.
            client = tracking.client(settings)
            first = client.get_model_version("offer-ranker", "1")
            client.create_model_version("offer-ranker", first.source, first.run_id)
            tracking.set_champion("offer-ranker", "2", settings)

            def both_followed() -> bool:
                followed = _logged(stderr, "champion followed")
                return [entry["model_version"] for entry in followed] == ["offer-ranker/2"] * 2

            # Each worker looks every second; the rest allows for a busy machine.
            _wait_until(both_followed, 10, "both workers on offer-ranker/2")
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert 'model_version="offer-ranker/2"' in metrics
            assert 'model_version="offer-ranker/1"' not in metrics
        finally:
            server.terminate()
            server.wait(timeout=30)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, on either stream, unwrapped."""
    return " ".join((result.stdout + result.stderr).split())


def test_a_version_promote_and_a_rollback_reach_the_api_answers(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    """The commands an ML engineer runs, against a running API: `offers promote --version`
    moves the answers to that version, `offers rollback` back to the one before, each within
    the poll interval, and the registry's aliases say the same."""
    from training import tracking

    world = simulated_world.copy(tmp_path / "world")
    env = {
        **os.environ,
        "OFFERS_DATA_DIR": str(world.data_dir),
        "OFFERS_CATALOG": str(CATALOG),
        "OFFERS_FEATURES_DIR": str(world.features_dir),
        "OFFERS_FEAST_DIR": str(world.feast_dir),
        "OFFERS_DATABASE_URL": f"sqlite:///{tmp_path / 'offers.db'}",
        "MLFLOW_TRACKING_URI": world.mlflow_tracking_uri,
        "OFFERS_MLFLOW_ARTIFACT_ROOT": str(world.mlflow_artifact_root),
        "OFFERS_API_KEYS": f"{RENDERER}:renderer",
        "OFFERS_MODEL_POLL_SECONDS": "1",
    }
    # Version 2 from version 1's files: a version the gate finds no better, so only --force
    # promotes it.
    client = tracking.client(world)
    first = client.get_model_version("offer-ranker", "1")
    # The files' own location: MLflow resolves a `models:/` source through its global tracking
    # URI, which another test may have pointed elsewhere.
    files = client.get_model_version_download_uri("offer-ranker", "1")
    client.create_model_version("offer-ranker", files, first.run_id)
    refused = _cli(env, "promote", "--version", "2")
    assert refused.returncode == 1 and "version 2 not promoted" in _said(refused)

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    customer = _customers_with_consent(world)[0]
    invoices = iter(range(1_000))

    def answered_by() -> str:
        # A fresh invoice each time: a stored decision would replay the version that made it.
        answer = _offers(base, f"INV-E2E-LIFECYCLE-{next(invoices)}", customer)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["model_version"])

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return server.poll() is not None

    try:
        _wait_until(ready, 120, "the API ready")
        assert server.poll() is None
        assert answered_by() == "offer-ranker/1"

        promoted = _cli(
            env, "promote", "--version", "2", "--force", "--reason", "trial", "--by", "ml-eng"
        )
        assert promoted.returncode == 0, _said(promoted)
        assert "offer-ranker: version 2 is now champion" in _said(promoted)
        _wait_until(lambda: answered_by() == "offer-ranker/2", 10, "answers from version 2")
        aliases = {v.version: v.aliases for v in tracking.versions("offer-ranker", world)}
        assert aliases["2"] == ("champion",) and aliases["1"] == ("previous_champion",)

        rolled = _cli(env, "rollback", "--model", "offer-ranker", "--reason", "fell")
        assert rolled.returncode == 0, _said(rolled)
        assert "offer-ranker: champion 2 → 1 (rolled back)" in _said(rolled)
        _wait_until(lambda: answered_by() == "offer-ranker/1", 10, "answers from version 1")
        aliases = {v.version: v.aliases for v in tracking.versions("offer-ranker", world)}
        assert aliases["1"] == ("champion",) and aliases["2"] == ("previous_champion",)
    finally:
        server.terminate()
        server.wait(timeout=30)
