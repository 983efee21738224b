"""The monitoring statistics: PSI, input profiles, calibration by week, degraded share."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest

from training.drift import (
    DriftThresholds,
    MonitoringReport,
    Outcomes,
    calibration,
    degraded_share,
    input_drift,
    input_profile,
    iso_week,
    pooled,
    population_stability_index,
    prediction_drift,
    profile_of,
)
from training.model_inputs import (
    CUSTOMER_FEATURES,
    MONITORED_INPUTS,
    age_band,
    model_may_score,
    monitored_inputs,
    satisfaction_band,
)

THRESHOLDS = DriftThresholds()


def frame(rng: np.random.Generator, rows: int, tenure_shift: float = 0.0) -> pd.DataFrame:
    values = {name: np.zeros(rows) for name in MONITORED_INPUTS}
    values["tenure_months"] = rng.normal(48.0 + tenure_shift, 12.0, rows)
    values["data_gb_m1"] = np.where(rng.random(rows) < 0.2, np.nan, rng.gamma(2.0, 4.0, rows))
    values["age_band"] = rng.choice(["18-29", "30-44", "45-64", "65+"], rows)
    values["satisfaction_band"] = rng.choice(["low", "neutral", "high", "unanswered"], rows)
    return pd.DataFrame(values)


def test_psi_is_zero_for_the_same_shares_and_follows_its_formula() -> None:
    assert population_stability_index([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    # An empty bin on one side counts at the floor share, not as infinity.
    assert math.isfinite(population_stability_index([1.0, 0.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="same bins"):
        population_stability_index([0.5, 0.5], [1.0])


def test_a_profile_bins_numbers_at_the_training_deciles_with_missing_values_apart() -> None:
    profile = input_profile(frame(np.random.default_rng(0), 5_000), "2026-01-01..2026-07-01")
    tenure = profile.features["tenure_months"]
    assert len(tenure.edges) == 9
    assert tenure.shares[:10] == pytest.approx([0.1] * 10, abs=0.002)
    assert tenure.shares[-1] == 0.0  # none missing
    data = profile.features["data_gb_m1"]
    assert data.shares[-1] == pytest.approx(0.2, abs=0.02)
    assert sum(data.shares) == pytest.approx(1.0)
    # A constant input has one edge: at or below it, above it, missing.
    assert profile.features["sms_m1"].edges == (0.0,)
    assert profile.features["sms_m1"].shares == (1.0, 0.0, 0.0)
    # Bands by band, then "other" and missing.
    assert profile.features["age_band"].categories == ("18-29", "30-44", "45-64", "65+")
    assert len(profile.features["age_band"].shares) == 6


def test_a_profile_survives_the_model_metadata_as_json() -> None:
    profile = input_profile(frame(np.random.default_rng(0), 500), "2026-01-01..2026-07-01")
    stored = json.loads(json.dumps({"calibrator": {}, "input_profile": profile.to_dict()}))
    assert profile_of(stored) == profile
    assert profile_of({"calibrator": {}}) is None
    assert profile_of(None) is None


def test_drift_is_alert_for_a_shifted_input_and_ok_for_the_others() -> None:
    profile = input_profile(frame(np.random.default_rng(0), 5_000), "w")
    found = {
        d.feature: d
        for d in input_drift(profile, frame(np.random.default_rng(1), 800, 30.0), THRESHOLDS)
    }
    assert found["tenure_months"].status == "alert"
    assert found["tenure_months"].psi is not None and found["tenure_months"].psi > 1.0
    for name in ("data_gb_m1", "age_band", "satisfaction_band", "sms_m1"):
        assert found[name].status == "ok", name
        assert found[name].psi is not None and found[name].psi < THRESHOLDS.psi_warn


def test_a_band_the_training_window_never_saw_counts_as_drift() -> None:
    profile = input_profile(frame(np.random.default_rng(0), 1_000), "w")
    recent = frame(np.random.default_rng(1), 200)
    recent["age_band"] = "unheard-of"
    found = {d.feature: d for d in input_drift(profile, recent, THRESHOLDS)}
    assert found["age_band"].status == "alert"


def test_too_few_decisions_give_no_status() -> None:
    profile = input_profile(frame(np.random.default_rng(0), 1_000), "w")
    found = input_drift(profile, frame(np.random.default_rng(1), 20, 30.0), THRESHOLDS)
    assert {d.status for d in found} == {"too_few"}
    empty = input_drift(profile, frame(np.random.default_rng(1), 0), THRESHOLDS)
    assert {(d.psi, d.status) for d in empty} == {(None, "too_few")}


def test_calibration_gives_the_wilson_interval_and_marks_a_gap_beyond_noise() -> None:
    # 20 of 100 accepted: Wilson 95 % interval 13.3 %–28.9 % (Wilson 1927).
    ok = calibration("2026-W48", 100, 22.0, 20, THRESHOLDS)
    assert (ok.offers, ok.accepted, ok.predicted, ok.observed) == (100, 20, 0.22, 0.2)
    assert (ok.observed_low, ok.observed_high) == (
        pytest.approx(0.1334, abs=1e-4),
        pytest.approx(0.2888, abs=1e-4),
    )
    assert ok.gap == pytest.approx(-0.02)
    assert ok.status == "ok"
    # A 7-point gap inside the interval is a warning, outside it an alert.
    assert calibration("w", 100, 27.0, 20, THRESHOLDS).status == "warn"
    assert calibration("w", 1_000, 270.0, 200, THRESHOLDS).status == "alert"
    assert calibration("w", 10, 9.0, 0, THRESHOLDS).status == "too_few"
    none = calibration("w", 0, 0.0, 0, THRESHOLDS)
    assert (none.offers, none.predicted, none.status) == (0, None, "too_few")
    with pytest.raises(ValueError, match="11 accepted of 10"):
        calibration("w", 10, 1.0, 11, THRESHOLDS)


def test_prediction_drift_pools_the_days_of_each_iso_week_oldest_first() -> None:
    days = [
        Outcomes(dt.date(2026, 11, 23), 30, 9.0, 9),  # Monday of 2026-W48
        Outcomes(dt.date(2026, 11, 29), 30, 9.0, 9),  # its Sunday
        Outcomes(dt.date(2026, 11, 16), 40, 12.0, 4),  # 2026-W47
        Outcomes(dt.date(2026, 11, 22), 20, 6.0, 2),
    ]
    found = prediction_drift(days, THRESHOLDS)
    assert [(w.period, w.offers, w.predicted, w.observed, w.status) for w in found] == [
        ("2026-W47", 60, 0.3, 0.1, "alert"),
        ("2026-W48", 60, 0.3, 0.3, "ok"),
    ]
    overall = pooled("all", days, THRESHOLDS)
    assert (overall.offers, overall.accepted, overall.observed) == (120, 24, 0.2)


def test_iso_weeks_cross_the_year_as_iso_8601_says() -> None:
    assert iso_week(dt.date(2026, 11, 30)) == "2026-W49"
    assert iso_week(dt.date(2026, 12, 31)) == "2026-W53"
    assert iso_week(dt.date(2027, 1, 3)) == "2026-W53"
    assert iso_week(dt.date(2027, 1, 4)) == "2027-W01"


def test_degraded_share_is_marked_above_its_threshold() -> None:
    assert degraded_share(200, 10, THRESHOLDS).status == "ok"  # 5 % is the limit, allowed
    above = degraded_share(200, 11, THRESHOLDS)
    assert (above.share, above.status) == (0.055, "alert")
    assert degraded_share(0, 0, THRESHOLDS).share is None


def test_the_logged_inputs_keep_age_and_satisfaction_as_bands_only() -> None:
    row = np.arange(len(CUSTOMER_FEATURES), dtype=float) + 0.123456
    row[CUSTOMER_FEATURES.index("age")] = 37.0
    row[CUSTOMER_FEATURES.index("satisfaction")] = np.nan
    row[CUSTOMER_FEATURES.index("tenure_months")] = np.nan
    kept = monitored_inputs(row)
    assert set(kept) == set(MONITORED_INPUTS)
    assert "age" not in kept and "satisfaction" not in kept
    assert (kept["age_band"], kept["satisfaction_band"]) == ("30-44", "unanswered")
    assert kept["tenure_months"] is None
    assert kept["data_gb_m1"] == 0.1235
    assert [age_band(a) for a in (18, 29.9, 30, 64, 65, 101)] == [
        "18-29",
        "18-29",
        "30-44",
        "45-64",
        "65+",
        "65+",
    ]
    assert age_band(float("nan")) is None
    assert [satisfaction_band(s) for s in (1, 2, 3, 4, 5)] == [
        "low",
        "low",
        "neutral",
        "high",
        "high",
    ]


def test_the_report_serialises_to_json_with_its_advice() -> None:
    profile = input_profile(frame(np.random.default_rng(0), 1_000), "w")
    drift = input_drift(profile, frame(np.random.default_rng(1), 300, 30.0), THRESHOLDS)
    overall = calibration("all", 100, 22.0, 20, THRESHOLDS)
    report = MonitoringReport(
        since="2026-11-01T00:00:00+00:00",
        until="2026-11-29T00:00:00+00:00",
        model_version="offer-ranker/3",
        profile_window="w",
        decisions_with_inputs=300,
        inputs=drift,
        weeks=[overall],
        overall=overall,
        degraded=degraded_share(300, 0, THRESHOLDS),
        thresholds=THRESHOLDS,
    )
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["advice"] == (
        "Retrain: inputs drifted (PSI ≥ 0.25: tenure_months). Run `offers retrain`."
    )
    assert as_json["thresholds"]["psi_alert"] == 0.25
    assert as_json["overall"]["observed"] == 0.2


def test_the_training_profile_keeps_the_customers_the_model_may_score() -> None:
    frame = pd.DataFrame(
        {
            "consent_marketing": [1, 1, 1, 0, 1, 1],
            "consent_profiling": [1, 0, 1, 1, 1, None],
            "objected_marketing": [0, 0, 1, 0, 0, 0],
            "age": [40, 40, 40, 40, 17, 40],
        }
    )
    assert model_may_score(frame).tolist() == [True, False, False, False, False, False]
    # A frame without the consent columns (hand-made training rows) keeps them all.
    assert model_may_score(pd.DataFrame({"age": [30, 50]})).tolist() == [True, True]
