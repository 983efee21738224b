"""Experiments: creation rules, assignment, and the report's numbers on a hand-made log."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest

from serving.api.schemas import ExperimentCreate
from serving.decision_log import DecisionLog
from serving.decision_log.experiments import insert_experiment, variant_counts
from serving.decision_log.records import Experiment, ExperimentSpec, Variant, VariantCounts
from serving.experiments import (
    ExperimentExists,
    Experiments,
    RateDifference,
    RateInterval,
    assign_variant,
    build_report,
    covers,
    difference_interval,
    wilson_interval,
)
from tests.factories.api import auth, log_decision

MARKETING = auth("marketing")


def experiment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": "ranker-vs-rules",
        "description": "Does the ranker beat the rules?",
        "variants": [
            {"name": "treatment", "weight": 0.45, "policy": "model"},
            {"name": "rules", "weight": 0.45, "policy": "rules"},
            {"name": "control", "weight": 0.10, "policy": "holdout"},
        ],
        "start": "2026-12-01T00:00:00Z",
        "end": "2027-02-28T23:59:59Z",
    }
    body.update(overrides)
    return body


def spec() -> ExperimentSpec:
    """The experiment of ``experiment()`` as the experiments' logic takes it."""
    return ExperimentSpec(
        key="ranker-vs-rules",
        description="Does the ranker beat the rules?",
        variants=(
            Variant("treatment", 0.45, "model"),
            Variant("rules", 0.45, "rules"),
            Variant("control", 0.10, "holdout"),
        ),
        start=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        end=dt.datetime(2027, 2, 28, 23, 59, 59, tzinfo=dt.UTC),
    )


def test_an_experiment_is_created_201_and_listed(client: Any) -> None:
    response = client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    assert response.status_code == 201
    created = response.json()
    assert created["key"] == "ranker-vs-rules"
    assert created["start"] == "2026-12-01T00:00:00Z"
    listed = client.get("/v1/experiments", headers=MARKETING).json()
    assert listed["count"] == 1 and listed["data"][0]["variants"] == experiment()["variants"]
    assert client.get("/v1/experiments/ranker-vs-rules", headers=MARKETING).json() == created


def test_the_same_key_again_is_409(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    response = client.post(
        "/v1/experiments", json=experiment(description="again"), headers=MARKETING
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "an experiment with key ranker-vs-rules exists"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "model"},
                    {"name": "b", "weight": 0.4, "policy": "rules"},
                ]
            },
            "sum to 0.9",
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "model"},
                    {"name": "a", "weight": 0.5, "policy": "rules"},
                ]
            },
            "repeated: a",
        ),
        ({"variants": [{"name": "a", "weight": 1.0, "policy": "best"}]}, "policy"),
        ({"variants": [{"name": "a", "weight": 1.0, "policy": "model:"}]}, "policy"),
        ({"variants": []}, "variants"),
        ({"start": "2027-03-01T00:00:00Z"}, "start must be before end"),
        # A number is not a time, though lax parsing would read it as seconds since 1970.
        ({"start": 0}, "ISO 8601"),
        ({"end": 1900000000}, "ISO 8601"),
        # The offset would move these past Python's first and last representable instants.
        ({"start": "0001-01-01T00:00:00+01:00"}, "between the years 1900 and 2999"),
        ({"end": "9999-12-31T23:59:59-01:00"}, "between the years 1900 and 2999"),
        ({"key": "with space"}, "key"),
        # PostgreSQL cannot store NUL in text; no control character belongs in a description.
        ({"description": "spring\u0000offer"}, "control characters (found U+0000"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_an_invalid_experiment_is_422_naming_the_problem(
    client: Any, change: dict[str, Any], named: str
) -> None:
    response = client.post("/v1/experiments", json=experiment(**change), headers=MARKETING)
    assert response.status_code == 422
    assert named in response.json()["detail"]


def test_weights_may_miss_one_by_rounding_only() -> None:
    thirds = [{"name": n, "weight": 1 / 3, "policy": "rules"} for n in ("a", "b", "c")]
    assert len(ExperimentCreate.model_validate(experiment(variants=thirds)).variants) == 3
    off = [
        {"name": "a", "weight": 0.5 + 1e-8, "policy": "rules"},
        {"name": "b", "weight": 0.5, "policy": "rules"},
    ]
    with pytest.raises(ValueError, match="sum to 1"):
        ExperimentCreate.model_validate(experiment(variants=off))


def test_a_challenger_policy_names_a_version() -> None:
    body = ExperimentCreate.model_validate(
        experiment(variants=[{"name": "new", "weight": 1.0, "policy": "model:4"}])
    )
    assert body.variants[0].policy == "model:4"


def test_assignment_is_stable_and_follows_the_weights() -> None:
    variants = spec().variants
    assigned = [
        assign_variant("ranker-vs-rules", f"C{i:06d}", variants).name for i in range(20_000)
    ]
    again = [assign_variant("ranker-vs-rules", f"C{i:06d}", variants).name for i in range(20_000)]
    assert assigned == again
    shares = {name: count / 20_000 for name, count in Counter(assigned).items()}
    assert shares == pytest.approx({"treatment": 0.45, "rules": 0.45, "control": 0.10}, abs=0.012)
    other = [assign_variant("other-key", f"C{i:06d}", variants).name for i in range(2_000)]
    assert other != assigned[:2_000]  # another experiment splits customers independently


def test_an_invoice_date_is_covered_from_start_to_end() -> None:
    defined = spec()
    assert not covers(defined, dt.date(2026, 11, 30))
    assert covers(defined, dt.date(2026, 12, 1))
    assert covers(defined, dt.date(2027, 2, 28))
    assert not covers(defined, dt.date(2027, 3, 1))


def test_wilson_interval_matches_hand_computation() -> None:
    # p = 6/20 = 0.3, z = 1.96: centre (p + z²/2n)/(1 + z²/n) = 0.33223,
    # half z/(1 + z²/n)·sqrt(p(1-p)/n + z²/4n²) = 0.18675.
    assert wilson_interval(6, 20) == pytest.approx((0.145477, 0.518973), abs=1e-6)
    assert wilson_interval(0, 8) == pytest.approx((0.0, 0.324408), abs=1e-6)
    # All successes: the lower bound is n / (n + z²) = 10 / 13.8415.
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("trials", [1, 3, 8, 10, 37, 100, 1_000, 123_457])
def test_wilson_bounds_are_exactly_0_and_1_at_the_extremes(trials: int) -> None:
    # Not 1.39e-17: a report shows the bound as printed.
    assert (wilson_interval(0, trials) or (None, None))[0] == 0.0
    assert (wilson_interval(trials, trials) or (None, None))[1] == 1.0


def test_difference_interval_is_newcombes() -> None:
    difference, low, high = difference_interval(6, 20, 0, 8) or (0, 0, 0)
    # 0.3 - sqrt((0.3 - 0.145477)² + (0.324408 - 0)²) and 0.3 + sqrt((0.518973 - 0.3)² + 0²)
    assert (difference, low, high) == pytest.approx((0.3, -0.059329, 0.518973), abs=1e-6)
    assert difference_interval(1, 10, 0, 0) is None


def test_the_report_on_a_hand_made_log(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    log = client.app.state.services.log
    # treatment: 20 decisions of 15 customers, 6 with an accept; rules: 10 of 10, 2 accepted;
    # control (holdout): 8 of 8, no offers.
    for i in range(20):
        log_decision(log, "treatment", f"T{i % 15}", accepted=i < 6)
    for i in range(10):
        log_decision(log, "rules", f"R{i}", accepted=i < 2, offers=3)
    for i in range(8):
        log_decision(log, "control", f"K{i}", accepted=False, offers=0)
    log_decision(
        log, "other", "X1", accepted=True
    )  # not a variant of this experiment: not reported

    response = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING)
    assert response.status_code == 200
    report = response.json()
    assert report["control"] == "control" and report["confidence"] == 0.95
    rows = {row["name"]: row for row in report["variants"]}
    assert list(rows) == ["treatment", "rules", "control"]
    treatment, rules, control = rows["treatment"], rows["rules"], rows["control"]
    assert (treatment["customers"], treatment["decisions"], treatment["accepted"]) == (15, 20, 6)
    assert treatment["offers_shown"] == 40 and rules["offers_shown"] == 30
    assert treatment["acceptance_rate"] == pytest.approx(0.3)
    assert treatment["acceptance_interval"] == pytest.approx(
        {"low": 0.145477, "high": 0.518973}, abs=1e-6
    )
    assert rules["acceptance_rate"] == pytest.approx(0.2)
    assert rules["acceptance_interval"] == pytest.approx(
        {"low": 0.056682, "high": 0.509838}, abs=1e-6
    )
    assert (control["decisions"], control["acceptance_rate"], control["difference"]) == (
        8,
        0.0,
        None,
    )
    assert treatment["difference"]["against"] == "control"
    assert treatment["difference"]["value"] == pytest.approx(0.3)
    assert treatment["difference"]["interval"] == pytest.approx(
        {"low": -0.059329, "high": 0.518973}, abs=1e-6
    )
    assert rules["difference"]["interval"] == pytest.approx(
        {"low": -0.154655, "high": 0.509838}, abs=1e-6
    )

    page = client.get("/experiments/ranker-vs-rules", headers=MARKETING)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<table" in page.text and "<script" not in page.text
    assert "30.0 %" in page.text and "14.5 % – 51.9 %" in page.text and "+30.0 pp" in page.text


def test_without_decisions_the_report_has_no_rates(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert all(
        row["decisions"] == 0 and row["acceptance_rate"] is None for row in report["variants"]
    )
    page = client.get("/experiments/ranker-vs-rules", headers=MARKETING)
    assert page.status_code == 200


def test_the_control_is_the_first_variant_without_a_holdout() -> None:
    from serving.experiments import control_variant

    variants = [Variant("a", 0.5, "model"), Variant("b", 0.5, "rules")]
    assert control_variant(variants).name == "a"


@pytest.mark.parametrize(
    "path", ["/v1/experiments/nope/report", "/v1/experiments/nope", "/experiments/nope"]
)
def test_an_unknown_experiment_is_404(client: Any, path: str) -> None:
    response = client.get(path, headers=MARKETING)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "no experiment with key nope"


def test_the_report_is_computed_from_the_counts_alone() -> None:
    counts = {
        "treatment": VariantCounts(customers=15, decisions=20, offers_shown=40, accepted=6),
        "control": VariantCounts(customers=8, decisions=8, offers_shown=0, accepted=0),
    }
    report = build_report(spec(), counts)
    assert (report.key, report.control, report.confidence) == ("ranker-vs-rules", "control", 0.95)
    treatment, rules, control = report.variants
    assert (treatment.name, treatment.policy, treatment.weight) == ("treatment", "model", 0.45)
    assert (treatment.customers, treatment.decisions, treatment.offers_shown) == (15, 20, 40)
    assert treatment.acceptance_rate == pytest.approx(0.3)
    interval = treatment.acceptance_interval
    assert interval is not None
    assert (interval.low, interval.high) == pytest.approx((0.145477, 0.518973), abs=1e-6)
    difference = treatment.difference
    assert isinstance(difference, RateDifference) and difference.against == "control"
    assert difference.value == pytest.approx(0.3)
    assert isinstance(difference.interval, RateInterval)
    assert (difference.interval.low, difference.interval.high) == pytest.approx(
        (-0.059329, 0.518973), abs=1e-6
    )
    # Nothing logged for rules: no rate, no interval, nothing to compare.
    assert (rules.decisions, rules.acceptance_rate, rules.acceptance_interval) == (0, None, None)
    assert rules.difference is None
    assert (control.acceptance_rate, control.difference) == (0.0, None)


def test_an_experiment_is_stored_and_read_back_as_created(tmp_path: Any) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    store = Experiments(log)
    created = store.create(spec())
    assert isinstance(created, Experiment) and created.created_at.tzinfo == dt.UTC
    assert (created.key, created.variants, created.start) == (
        "ranker-vs-rules",
        spec().variants,
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    assert store.get("ranker-vs-rules") == created
    assert store.all() == [created]
    with pytest.raises(ExperimentExists):
        store.create(spec())
    assert not insert_experiment(log, created)  # the key is taken: nothing stored
    with pytest.raises(KeyError):
        store.get("nope")
    log.close()


def test_variant_counts_come_from_the_logged_decisions_and_events(tmp_path: Any) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    for number in range(3):
        log_decision(log, "treatment", "C1" if number < 2 else "C2", accepted=number == 0)
    log_decision(log, "control", "C3", accepted=False, offers=0)
    log_decision(log, "treatment", "C4", accepted=True, experiment="another")
    assert variant_counts(log, "ranker-vs-rules") == {
        "treatment": VariantCounts(customers=2, decisions=3, offers_shown=6, accepted=1),
        "control": VariantCounts(customers=1, decisions=1, offers_shown=0, accepted=0),
    }
    assert variant_counts(log, "nope") == {}
    log.close()


def test_running_experiments_are_cached_and_refreshed(tmp_path: Any) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    now = [0.0]
    store = Experiments(log, refresh_seconds=5.0, clock=lambda: now[0])
    day = dt.date(2026, 12, 10)
    assert store.running_on(day) is None
    # Another replica creates it: not seen until the cache is refreshed.
    Experiments(log).create(spec())
    assert store.running_on(day) is None
    now[0] = 6.0
    running_now = store.running_on(day)
    assert running_now is not None and running_now.key == "ranker-vs-rules"
    log.close()


def test_print_report_prints_a_table(tmp_path: Any, monkeypatch: Any, capsys: Any) -> None:
    from core.settings import get_settings
    from serving.experiments import print_report

    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = DecisionLog(url)
    Experiments(log).create(spec())
    log_decision(log, "treatment", "C1", accepted=True)
    log.close()
    monkeypatch.setenv("OFFERS_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for every column
    get_settings.cache_clear()
    try:
        print_report("ranker-vs-rules")
        with pytest.raises(KeyError):
            print_report("nope")
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "treatment" in out and "100.0 %" in out and "control" in out
