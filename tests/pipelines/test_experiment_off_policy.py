"""A proposed policy that was not run, estimated on an experiment's logged decisions: the figures
on hand-built replays, then on a simulated experiment through the command."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipelines.experiment_off_policy import (
    MIN_EFFECTIVE_SAMPLE,
    ProposedPolicyError,
    check_proposed,
    estimate_from,
)
from pipelines.policy_evaluation import Replayed

DAY = dt.date(2026, 12, 3)


def _replay(number: int, logged: str, propensity: float, accepted: bool, rules: str) -> Replayed:
    return Replayed(
        decision_id=f"D{number}",
        customer_id=f"C{number}",
        day=DAY,
        logged_offer=logged,
        propensity=propensity,
        accepted=accepted,
        passed=["A", "B", "C"],
        model_acceptance={"A": 0.4, "B": 0.2, "C": 0.1},
        saving_sek={},
        shown={"rules": [rules], "model": ["B"]},
    )


def test_the_estimate_on_hand_built_replays() -> None:
    replayed = [
        _replay(1, "A", 0.5, True, "A"),
        _replay(2, "B", 0.5, False, "A"),
        _replay(3, "A", 1.0, True, "A"),
        _replay(4, "C", 0.25, True, "A"),
    ]
    estimate = estimate_from(replayed, "rules", decisions=6, resamples=50)
    # Rules would show A first: it agrees with the log on D1 and D3, weights 1/0.5 and 1/1.
    assert (estimate.evaluated, estimate.left_out, estimate.agreement) == (4, 2, 0.5)
    assert estimate.logged_acceptance == 0.75
    # IPS: (1·2 + 1·1) / 4; SNIPS: 3 / (2 + 1); ESS: (2 + 1)² / (2² + 1²) = 1.8.
    assert estimate.ips.value == pytest.approx(0.75)
    assert estimate.snips.value == pytest.approx(1.0)
    assert estimate.effective_sample_size == pytest.approx(1.8)
    # DR: the model's 0.4 for A, plus the weighted residual where the log agrees:
    # (0.4 + 2·0.6 + 0.4 + 0.4 + 1·0.6 + 0.4) / 4 = 0.85.
    assert estimate.dr.value == pytest.approx(0.85)
    assert estimate.ips.low <= estimate.ips.value <= estimate.ips.high
    (warning,) = estimate.warnings
    assert warning.startswith("Unreliable: the estimate rests on an effective sample of 2 of 4")
    assert str(MIN_EFFECTIVE_SAMPLE) in warning
    # A model (the champion or model:<version>) is read from the replay's model choice: B,
    # shown first only in D2 (not accepted).
    model = estimate_from(replayed, "model:7", decisions=4, resamples=50)
    assert (model.agreement, model.ips.value, model.snips.value) == (0.25, 0.0, 0.0)
    assert [warning.split(":")[0] for warning in model.warnings] == ["Unreliable"]
    assert model.as_dict()["ips"] == {"value": 0.0, "low": 0.0, "high": 0.0}


def test_a_log_without_exploration_is_named() -> None:
    replayed = [_replay(n, "A", 1.0, n % 2 == 0, "B") for n in range(200)]
    estimate = estimate_from(replayed, "rules", decisions=200, resamples=20)
    assert estimate.agreement == 0.0 and estimate.effective_sample_size == 0.0
    assert [w.split(":")[0].split(" ")[0] for w in estimate.warnings] == [
        "Unreliable",
        "rules",
        "Every",
    ]
    assert "no logged decision carries weight" in estimate.warnings[0]
    assert "in only 0.0 % of the decisions" in estimate.warnings[1]


def test_what_cannot_be_estimated_is_refused_with_the_reason() -> None:
    assert check_proposed("model:3") == "model:3"
    with pytest.raises(ProposedPolicyError, match="one of model, rules, popularity"):
        check_proposed("holdout")
    with pytest.raises(ProposedPolicyError, match="model:<version>"):
        check_proposed("model:two words")
    with pytest.raises(ProposedPolicyError, match="nothing to estimate from"):
        estimate_from([], "rules", decisions=10)


@pytest.mark.integration
@pytest.mark.slow
def test_a_simulated_experiment_estimates_a_policy_it_did_not_run(
    simulated_world: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from typer.testing import CliRunner

    from core.settings import get_settings
    from pipelines.cli import app
    from pipelines.experiment_off_policy import estimate_proposed
    from pipelines.experiment_simulation import simulate_experiment
    from serving.decision_log import DecisionLog
    from serving.decision_log.export import offer_events
    from serving.decision_log.records import ExperimentSpec, Variant
    from serving.experiments import Experiments
    from tests.simulated_world import SimulatedWorld

    assert isinstance(simulated_world, SimulatedWorld)
    settings = simulated_world.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'offers.db'}"}
    )
    log = DecisionLog(settings.database_url)
    Experiments(log).create(
        ExperimentSpec(
            key="ranker-vs-holdout",
            description="",
            variants=(Variant("treatment", 0.8, "model"), Variant("holdout", 0.2, "holdout")),
            start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            end=dt.datetime(2026, 12, 31, tzinfo=dt.UTC),
        )
    )
    log.close()
    run = simulate_experiment("ranker-vs-holdout", 1, settings, seed=3)
    rules = estimate_proposed("ranker-vs-holdout", "rules", settings, resamples=50)
    champion = estimate_proposed("ranker-vs-holdout", "model", settings, resamples=50)

    # What was logged, read independently: the first offers of the experiment's decisions.
    log = DecisionLog(settings.database_url)
    try:
        events = offer_events(log).to_pandas()
    finally:
        log.close()
    firsts = events[(events["rank"] == 1) & events["propensity"].notna()]
    assert sum(v.decisions for v in run.report.variants) == rules.decisions
    assert rules.evaluated + rules.left_out == rules.decisions
    assert 0 < rules.evaluated <= len(firsts)
    assert rules.logged_acceptance == pytest.approx(
        (firsts["outcome"] == "accepted").sum() / len(firsts), abs=0.02
    )
    # The champion ran (greedy but for exploration): it shows what was logged nearly always,
    # and its estimate is the logged acceptance within its interval.
    assert champion.agreement > 0.9
    assert champion.effective_sample_size > 0.8 * champion.evaluated
    assert champion.snips.low <= champion.logged_acceptance <= champion.snips.high
    for estimate in (rules, champion):
        for found in (estimate.ips, estimate.snips, estimate.dr):
            assert found.low <= found.value <= found.high
    print("off-policy:", {e.proposed: e.as_dict() for e in (rules, champion)})

    # Exploration gave the rules' choices little support: a few decisions carry the weight.
    assert rules.effective_sample_size < champion.effective_sample_size
    unreliable = [w for w in rules.warnings if w.startswith("Unreliable")]
    assert bool(unreliable) == (rules.effective_sample_size < MIN_EFFECTIVE_SAMPLE)

    # The command reads the settings of this world from the environment.
    for name, value in {
        "OFFERS_DATABASE_URL": settings.database_url,
        "OFFERS_DATA_DIR": settings.data_dir,
        "OFFERS_CATALOG": settings.catalog,
        "OFFERS_FEATURES_DIR": settings.features_dir,
        "OFFERS_FEAST_DIR": settings.feast_dir,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "OFFERS_MLFLOW_ARTIFACT_ROOT": settings.mlflow_artifact_root,
    }.items():
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    result = CliRunner().invoke(
        app,
        [
            "experiments",
            "report",
            "ranker-vs-holdout",
            "--proposed",
            "rules",
            "--resamples",
            "50",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["customers"] == run.report.customers
    assert body["off_policy"] == rules.as_dict()
    refused = CliRunner().invoke(
        app, ["experiments", "report", "ranker-vs-holdout", "--proposed", "holdout"]
    )
    assert refused.exit_code == 1
    assert "one of model, rules, popularity or model:<version>" in " ".join(refused.output.split())


def test_the_terminal_shows_the_warning_first_then_the_estimators() -> None:
    from rich.console import Console

    from pipelines.experiment_commands import off_policy_view

    replayed = [_replay(n, "A", 0.5, n % 4 == 0, "A") for n in range(8)]
    estimate = estimate_from(replayed, "rules", decisions=10, resamples=20)
    console = Console(record=True, width=200)
    console.print(off_policy_view(estimate))
    text = console.export_text()
    assert text.index("warning: Unreliable") < text.index("IPS")
    assert "estimated on 8 of the experiment's 10 decisions" in text
    assert "logged acceptance 25.0 %" in text and "same first offer in 100.0 %" in text
    # All eight agree with the log, weight 2 each: IPS 2 · 2 / 8 = 50 %, SNIPS 25 %, ESS 8.
    rows = {
        line.split()[1]: line
        for line in text.splitlines()
        if line.split()[1:2] in (["IPS"], ["SNIPS"])
    }
    assert "50.0 %" in rows["IPS"] and "25.0 %" in rows["SNIPS"]
    assert "Effective sample size of the weights: 8" in text
