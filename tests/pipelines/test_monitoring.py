"""Model monitoring on small worlds: drift injected into the served inputs or the outcomes is
found, and a world served like its training window raises nothing. The decision log is the
shared ``log`` fixture: SQLite, and PostgreSQL where it runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from core.settings import Settings, get_settings
from serving.decision.engine import decide, fallback_decision
from serving.decision_log import DecisionLog
from serving.monitoring import monitoring_report
from serving.offers import decision_record
from tests.factories.decision import FakeFeatureSource, make_catalog, request
from tests.factories.monitoring import (
    FIRST_DECISION,
    MODEL_VERSION,
    PERIOD,
    PREDICTED_ACCEPTANCE,
    serve,
    training_profile,
)
from tests.factories.training import log_version, registry_settings
from training import tracking
from training.drift import INPUT_PROFILE_METADATA, InputProfile, MonitoringReport
from training.registry import RANKER_MODEL

DECISIONS = 400
SHIFTED = ("data_gb_m1", "data_gb_avg_3m", "data_gb_max_6m")
UNSHIFTED = ("tenure_months", "voice_minutes_avg_3m", "invoice_amount_last_sek", "age_band")


@pytest.fixture(scope="module")
def profile() -> InputProfile:
    return training_profile(2_000, seed=1)


def report(log: DecisionLog, profile: InputProfile) -> MonitoringReport:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return monitoring_report(log, profile, MODEL_VERSION, settings, *PERIOD)


def psi(found: MonitoringReport) -> dict[str, tuple[float | None, str]]:
    return {drift.feature: (drift.psi, drift.status) for drift in found.inputs}


def test_a_world_served_like_its_training_window_raises_nothing(
    log: DecisionLog, profile: InputProfile
) -> None:
    served = serve(log, DECISIONS, seed=2)
    found = report(log, profile)
    assert found.decisions_with_inputs == DECISIONS
    values = psi(found)
    for name in (*SHIFTED, *UNSHIFTED, "satisfaction_band"):
        value, status = values[name]
        assert value is not None and value < found.thresholds.psi_warn, name
        assert status == "ok"
    assert all(status == "ok" for _, status in values.values())
    assert [week.period for week in found.weeks] == ["2026-W47", "2026-W48"]
    assert found.overall.offers == served.first_offers > DECISIONS * 0.9
    assert found.overall.predicted == pytest.approx(PREDICTED_ACCEPTANCE)
    assert found.overall.observed_low <= PREDICTED_ACCEPTANCE <= found.overall.observed_high
    assert found.overall.status == "ok"
    assert (found.degraded.answers, found.degraded.degraded, found.degraded.status) == (
        DECISIONS,
        0,
        "ok",
    )
    assert found.advice is None


def test_shifted_usage_crosses_the_alert_threshold_for_the_shifted_inputs_only(
    log: DecisionLog, profile: InputProfile
) -> None:
    serve(log, DECISIONS, seed=3, data_scale=2.5)
    found = report(log, profile)
    values = psi(found)
    for name in SHIFTED:
        value, status = values[name]
        assert value is not None and value >= found.thresholds.psi_alert, name
        assert status == "alert"
    for name in UNSHIFTED:
        value, status = values[name]
        assert value is not None and value < found.thresholds.psi_warn, name
        assert status == "ok"
    assert found.advice is not None
    assert found.advice.startswith("Retrain: inputs drifted")
    assert "data_gb_m1" in found.advice


def test_outcomes_that_no_longer_follow_the_predictions_are_prediction_drift(
    log: DecisionLog, profile: InputProfile
) -> None:
    served = serve(log, DECISIONS, seed=4, acceptance_scale=0.3)
    found = report(log, profile)
    assert (found.overall.offers, found.overall.accepted) == (served.first_offers, served.accepted)
    assert found.overall.observed == pytest.approx(served.accepted / served.first_offers, abs=1e-4)
    assert found.overall.gap < -found.thresholds.calibration_gap
    assert found.overall.observed_high < PREDICTED_ACCEPTANCE
    assert found.overall.status == "alert"
    assert {week.status for week in found.weeks} == {"alert"}
    # The inputs were served like the training window: only the outcomes moved.
    assert all(status == "ok" for _, status in psi(found).values())
    assert found.advice is not None and "predicted acceptance is off" in found.advice
    assert "inputs drifted" not in found.advice


def test_only_the_monitored_models_first_offers_count_in_its_calibration(
    log: DecisionLog, profile: InputProfile
) -> None:
    champion = serve(log, 200, seed=7)
    # A challenger in an experiment, whose offers are accepted far less than it predicts.
    challenger = serve(log, 200, seed=8, acceptance_scale=0.3, model_version="offer-ranker/8")
    found = report(log, profile)
    assert (found.overall.offers, found.overall.accepted) == (
        champion.first_offers,
        champion.accepted,
    )
    assert found.overall.status == "ok"
    # Every model decision's inputs count: they are the customers', whichever model read them.
    assert found.decisions_with_inputs == 400
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    both = monitoring_report(log, profile, None, settings, *PERIOD)
    assert both.overall.offers == champion.first_offers + challenger.first_offers


def test_degraded_answers_are_counted_with_the_ones_a_retry_replaced(
    log: DecisionLog, profile: InputProfile
) -> None:
    served = 120
    serve(log, served, seed=5)
    # Eight answers without the feature store; two of them replaced when a retry decided afresh.
    for number in range(8):
        invoice = request(invoice_id=f"INV-DOWN-{number}", customer_id=f"C-DOWN-{number}")
        degraded = fallback_decision(
            invoice, requested_policy="model", degraded="feature_store_unavailable"
        )
        record = decision_record(degraded, f"D-DOWN-{number}", "{}")
        log.record(dataclasses.replace(record, created_at=FIRST_DECISION))
    for number in range(2):
        retried = decide(
            request(invoice_id=f"INV-DOWN-{number}", customer_id=f"C-DOWN-{number}"),
            FakeFeatureSource(),
            make_catalog(),
            policy="rules",
            scorer=None,
            recently_declined=frozenset(),
        )
        record = decision_record(retried, f"D-RETRY-{number}", "{}")
        log.record(
            dataclasses.replace(record, created_at=FIRST_DECISION + dt.timedelta(hours=1)),
            superseding=f"D-DOWN-{number}",
        )
    found = report(log, profile)
    answers = served + 8 + 2
    assert (found.degraded.answers, found.degraded.degraded) == (answers, 8)
    assert found.degraded.share == pytest.approx(8 / answers, abs=1e-4)
    assert found.degraded.status == "alert"  # 6.2 % > 5 %
    assert found.advice is not None
    assert "6.2% of answers were degraded" in found.advice


@pytest.fixture
def monitored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A registry whose champion ranker carries the training window's input profile, and a
    decision log of shifted decisions; the command finds both through the environment."""
    from pipelines import cli as cli_module

    settings: Settings = registry_settings(tmp_path)
    version = log_version(
        settings,
        RANKER_MODEL,
        {"val_ndcg_at_3": 0.5},
        metadata={INPUT_PROFILE_METADATA: training_profile(1_000, seed=1).to_dict()},
    )
    tracking.set_champion(RANKER_MODEL, version.version, settings)
    database = f"sqlite:///{tmp_path / 'offers.db'}?synchronous=NORMAL"
    log = DecisionLog(database)
    serve(log, 150, seed=6, data_scale=2.5, model_version=version.label)
    log.close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("OFFERS_MLFLOW_ARTIFACT_ROOT", str(settings.mlflow_artifact_root))
    monkeypatch.setenv("OFFERS_DATABASE_URL", database)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(cli_module, "console", Console(stderr=True, width=200))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def offers(*arguments: str) -> Result:
    from pipelines.cli import app

    return CliRunner().invoke(app, list(arguments))


@pytest.mark.integration
def test_offers_monitor_json_reports_the_drift_against_the_champion(monitored: Settings) -> None:
    result = offers("monitor", "--since", "2026-11-15", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model_version"] == f"{RANKER_MODEL}/1"
    assert report["profile_window"] == "2025-11-01..2026-08-01"
    assert report["decisions_with_inputs"] == 150
    by_feature = {entry["feature"]: entry for entry in report["inputs"]}
    assert by_feature["data_gb_m1"]["status"] == "alert"
    assert by_feature["tenure_months"]["status"] == "ok"
    assert [week["period"] for week in report["weeks"]] == ["2026-W47", "2026-W48"]
    assert report["degraded"] == {"answers": 150, "degraded": 0, "share": 0.0, "status": "ok"}
    assert report["advice"].startswith("Retrain: inputs drifted (PSI ≥ 0.25: data_gb_")


@pytest.mark.integration
def test_offers_monitor_prints_a_table_per_feature_and_the_advice(monitored: Settings) -> None:
    result = offers("monitor", "--since", "2026-11-15")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(re.search(r"data_gb_m1\s+│\s+\d+\.\d{3}\s+│\s+alert", line) for line in lines)
    assert any(re.search(r"tenure_months\s+│\s+0\.\d{3}\s+│\s+ok", line) for line in lines)
    assert any(line.startswith("2026-W47") or "│ 2026-W47" in line for line in lines)
    assert "Degraded answers: 0 of 150 (0.0%; ok up to 5%) ok" in result.stdout
    assert "Retrain: inputs drifted" in result.stdout


@pytest.mark.parametrize(
    ("since", "message"),
    [("last tuesday", "is not a date"), ("2999-01-01", "is after today")],
)
def test_offers_monitor_refuses_a_since_that_is_no_day_before_today(
    since: str, message: str
) -> None:
    result = offers("monitor", "--since", since)
    assert result.exit_code == 2  # an option value the command refuses
    assert message in result.output


@pytest.mark.integration
def test_offers_monitor_without_a_champion_shows_the_other_figures_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = registry_settings(tmp_path)
    database = f"sqlite:///{tmp_path / 'offers.db'}?synchronous=NORMAL"
    log = DecisionLog(database)
    served = serve(log, 120, seed=9)
    log.close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("OFFERS_MLFLOW_ARTIFACT_ROOT", str(settings.mlflow_artifact_root))
    monkeypatch.setenv("OFFERS_DATABASE_URL", database)
    get_settings.cache_clear()
    try:
        result = offers("monitor", "--since", "2026-11-15", "--json")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["model_version"], report["profile_window"], report["inputs"]) == (None, None, [])
    assert report["decisions_with_inputs"] == 120
    assert report["overall"]["offers"] == served.first_offers
    assert any("carries no input profile" in note for note in report["notes"])


@pytest.mark.integration
def test_offers_monitor_says_which_store_did_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = registry_settings(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("OFFERS_MLFLOW_ARTIFACT_ROOT", str(settings.mlflow_artifact_root))
    # Nothing listens on port 9: the connection is refused at once.
    monkeypatch.setenv("OFFERS_DATABASE_URL", "postgresql://monitor@127.0.0.1:9/offers")
    get_settings.cache_clear()
    try:
        result = offers("monitor")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "the decision log database did not answer (OperationalError)" in result.output
    assert "127.0.0.1" not in result.output
