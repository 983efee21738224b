"""The drift gauges on /metrics: computed in the background over the decision log against the
serving ranker's input profile, never on a scrape; a failed computation keeps the last values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from serving.api.deps import Services
from serving.decision_log import DecisionLog
from tests.factories.api import FakeRegistry, api_settings, make_app, ranker, running
from tests.factories.monitoring import serve, training_profile
from training.drift import INPUT_PROFILE_METADATA

# The version of the fake registry's champion ranker.
SERVING = "offer-ranker/1"


def registry_with_profile() -> FakeRegistry:
    registry = FakeRegistry()
    profile = training_profile(1_000, seed=1)
    registry.champions["offer-ranker"] = dataclasses.replace(
        ranker(), metadata={INPUT_PROFILE_METADATA: profile.to_dict()}
    )
    return registry


def gauge(text: str, name: str, labels: str = "") -> float | None:
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def app_with_profile(tmp_path: Path, registry: FakeRegistry | None = None) -> FastAPI:
    # No refresh thread: the test refreshes when it wants the gauges computed.
    return make_app(
        tmp_path, registry=registry or registry_with_profile(), monitor_refresh_seconds=0
    )


def services(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


def recent() -> dt.datetime:
    """Two weeks of decisions ending now, inside the default 28-day window."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=15)


def test_the_gauges_show_the_drift_of_the_logged_decisions_once_computed(
    tmp_path: Path,
) -> None:
    app = app_with_profile(tmp_path)
    with running(app) as client:
        before = client.get("/metrics").text
        served = serve(
            services(app).log,
            200,
            seed=3,
            data_scale=2.5,
            acceptance_scale=0.3,
            first_decision=recent(),
            model_version=SERVING,
        )
        after_logging = client.get("/metrics").text
        assert services(app).drift.refresh()
        text = client.get("/metrics").text
    # Nothing is computed on a scrape: before the refresh there are no samples.
    for scrape in (before, after_logging):
        assert gauge(scrape, "offers_input_drift_psi", '{feature="data_gb_m1"}') is None
        assert gauge(scrape, "offers_degraded_share") is None
    shifted = gauge(text, "offers_input_drift_psi", '{feature="data_gb_m1"}')
    unshifted = gauge(text, "offers_input_drift_psi", '{feature="tenure_months"}')
    assert shifted is not None and shifted >= 0.25
    assert unshifted is not None and unshifted < 0.1
    observed = served.accepted / served.first_offers
    assert gauge(text, "offers_prediction_drift_gap") == pytest.approx(observed - 0.3, abs=1e-4)
    assert gauge(text, "offers_degraded_share") == 0.0
    computed = gauge(text, "offers_drift_computed_at_seconds")
    assert computed is not None and computed > recent().timestamp()
    # Age and satisfaction appear as bands, never as the values themselves.
    assert 'feature="age_band"' in text and 'feature="age"' not in text


def test_a_failed_computation_keeps_the_last_values_and_logs_no_personal_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with_profile(tmp_path)
    with running(app) as client:
        serve(
            services(app).log,
            150,
            seed=4,
            data_scale=2.5,
            first_decision=recent(),
            model_version=SERVING,
        )
        assert services(app).drift.refresh()
        first = client.get("/metrics").text
        with services(app).log.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE decision_offers")
        with caplog.at_level(logging.ERROR, logger="serving.monitoring"):
            assert not services(app).drift.refresh()
        second = client.get("/metrics").text
    labels = '{feature="data_gb_m1"}'
    assert gauge(second, "offers_input_drift_psi", labels) == gauge(
        first, "offers_input_drift_psi", labels
    )
    assert gauge(second, "offers_drift_computed_at_seconds") == gauge(
        first, "offers_drift_computed_at_seconds"
    )
    (failure,) = [r for r in caplog.records if r.name == "serving.monitoring"]
    assert failure.getMessage() == "drift gauges not refreshed"
    assert failure.error == "OperationalError"  # type: ignore[attr-defined]
    assert "C4-" not in caplog.text and "INV-4-" not in caplog.text


def test_without_an_input_profile_only_the_other_gauges_have_values(tmp_path: Path) -> None:
    app = app_with_profile(tmp_path, registry=FakeRegistry())  # a ranker trained before profiles
    with running(app) as client:
        serve(services(app).log, 120, seed=5, first_decision=recent(), model_version=SERVING)
        assert services(app).drift.refresh()
        text = client.get("/metrics").text
    assert "offers_input_drift_psi{" not in text
    assert gauge(text, "offers_degraded_share") == 0.0
    assert gauge(text, "offers_prediction_drift_gap") is not None


def test_each_worker_computes_the_gauges_in_its_own_thread_from_the_start(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    before = DecisionLog(settings.database_url)
    serve(before, 120, seed=6, data_scale=2.5, first_decision=recent(), model_version=SERVING)
    before.close()
    app = make_app(tmp_path, registry=registry_with_profile(), monitor_refresh_seconds=3600)
    with running(app):
        drift = services(app).drift
        assert drift.interval_seconds == 3600
    # Closing the app stops the thread after its first computation, made at start.
    assert drift.snapshot is not None
    assert drift.snapshot.psi["data_gb_m1"] >= 0.25
    assert drift.snapshot.degraded_share == 0.0
