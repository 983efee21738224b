"""Model monitoring on small worlds: drift injected into the served inputs or the outcomes is
found, and a world served like its training window raises nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from serving.decision.engine import decide, fallback_decision
from serving.decision_log import DecisionLog
from serving.monitoring import monitoring_report
from serving.offers import decision_record
from tests.factories.decision import FakeFeatureSource, make_catalog, request
from tests.factories.monitoring import (
    FIRST_DECISION,
    PERIOD,
    PREDICTED_ACCEPTANCE,
    serve,
    training_profile,
)
from training.drift import InputProfile, MonitoringReport

DECISIONS = 400
SHIFTED = ("data_gb_m1", "data_gb_avg_3m", "data_gb_max_6m")
UNSHIFTED = ("tenure_months", "voice_minutes_avg_3m", "invoice_amount_last_sek", "age_band")


@pytest.fixture(scope="module")
def profile() -> InputProfile:
    return training_profile(2_000, seed=1)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DecisionLog]:
    # NORMAL: no fsync per decision; durability is not what these tests are about.
    opened = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}?synchronous=NORMAL")
    yield opened
    opened.close()


def report(log: DecisionLog, profile: InputProfile) -> MonitoringReport:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return monitoring_report(log, profile, "offer-ranker/7", settings, *PERIOD)


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
