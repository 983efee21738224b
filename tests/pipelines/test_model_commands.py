"""``offers models list``, ``offers promote [--version N]`` and ``offers rollback`` on a real
MLflow registry of their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from core.settings import Settings, get_settings
from tests.factories.training import log_version, registry_settings
from training import tracking
from training.registry import (
    CHAMPION_METRIC_PREFIX,
    CHURN_MODEL,
    RANKER_MODEL,
    SERVED_COMPARED_VERSION_TAG,
    SERVED_VALUE_METRICS,
)

pytestmark = pytest.mark.integration

NDCG = "val_ndcg_at_3"
SERVED = "served_model_objective_value_sek"
WINDOWS = {"train_window": "2025-01-01..2026-06-01", "validation_window": "2026-06-01..2026-09-01"}


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A registry of its own, which the commands find through the environment."""
    from pipelines import cli as cli_module

    settings: Settings = registry_settings(tmp_path, promote_margin=0.01)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("OFFERS_MLFLOW_ARTIFACT_ROOT", str(settings.mlflow_artifact_root))
    monkeypatch.setenv("OFFERS_PROMOTE_MARGIN", "0.01")
    monkeypatch.setenv("COLUMNS", "250")  # the table's columns whole, not wrapped
    monkeypatch.setattr(cli_module, "console", Console(stderr=True, width=1000))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def offers(*arguments: str) -> Result:
    from pipelines.cli import app

    return CliRunner().invoke(app, list(arguments))


def _champion(name: str, settings: Settings) -> str | None:
    return tracking.champion_alias(name, settings)


def _two_rankers(settings: Settings) -> None:
    """Champion 2, previous champion 1."""
    log_version(settings, RANKER_MODEL, {NDCG: 0.60}, tags=WINDOWS)
    log_version(settings, RANKER_MODEL, {NDCG: 0.70, SERVED: 9.25}, tags=WINDOWS)
    assert offers("promote", "--model", RANKER_MODEL, "--version", "1").exit_code == 0
    assert offers("promote", "--model", RANKER_MODEL, "--version", "2").exit_code == 0


def test_models_list_shows_aliases_metrics_windows_and_records(settings: Settings) -> None:
    _two_rankers(settings)
    log_version(settings, CHURN_MODEL, {"val_auc": 0.7321})
    table = offers("models", "list")
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert "offer-ranker" in text and "val_ndcg_at_3" in text and "churn-risk" in text
    assert "champion" in text and "previous_champion" in text
    assert "0.7000" in text and "9.2500" in text and "0.7321" in text
    assert "2025-01-01 to 2026-06-01" in text and "2026-06-01 to 2026-09-01" in text
    assert " from 1" in text  # version 2's promotion record

    listing = json.loads(offers("models", "list", "--json").stdout)
    assert set(listing) == {RANKER_MODEL, CHURN_MODEL}
    ranker = listing[RANKER_MODEL]
    assert ranker["primary_metric"] == NDCG
    assert [v["version"] for v in ranker["versions"]] == ["2", "1"]
    newest, oldest = ranker["versions"]
    assert newest["aliases"] == ["champion"] and oldest["aliases"] == ["previous_champion"]
    assert newest["metric_value"] == pytest.approx(0.70)
    assert (newest["served_metric"], newest["served_value"]) == (SERVED, pytest.approx(9.25))
    assert oldest["served_value"] is None
    assert newest["train_window"] == WINDOWS["train_window"]
    assert newest["promotion"]["from"] == "1" and newest["promotion"]["forced"] is False
    assert listing[CHURN_MODEL]["versions"][0]["aliases"] == []

    only = json.loads(offers("models", "list", "--model", CHURN_MODEL, "--json").stdout)
    assert set(only) == {CHURN_MODEL}
    unknown = offers("models", "list", "--model", "nope")
    assert unknown.exit_code == 1 and "unknown model 'nope'" in unknown.output


def test_promote_version_passes_or_fails_the_gate(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    log_version(settings, RANKER_MODEL, {NDCG: 0.605})
    log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    passed = offers("promote", "--version", "1")  # --model defaults to the ranker
    assert passed.exit_code == 0, passed.output
    assert "offer-ranker: version 1 is now champion" in passed.output

    refused = offers("promote", "--version", "2", "--model", RANKER_MODEL)
    assert refused.exit_code == 1
    assert "version 2 not promoted: primary-metric check failed (short by 0.0050)" in (
        refused.output
    )
    assert _champion(RANKER_MODEL, settings) == "1"

    promoted = offers("promote", "--version", "3", "--by", "alice", "--reason", "better NDCG")
    assert promoted.exit_code == 0, promoted.output
    assert "previous_champion is version 1" in promoted.output
    tags = tracking.get_version(RANKER_MODEL, "3", settings).tags
    assert tags["promoted_by"] == "alice" and tags["promotion_reason"] == "better NDCG"
    assert tags["forced"] == "false"

    again = offers("promote", "--version", "3")
    assert again.exit_code == 0 and "already champion" in again.output

    unknown = offers("promote", "--version", "9")
    assert unknown.exit_code == 1
    assert "no version 9 of offer-ranker; versions: 1, 2, 3" in unknown.output


def test_a_served_policy_worth_less_fails_promote_version(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60, SERVED: 10.0})
    log_version(settings, RANKER_MODEL, {NDCG: 0.70, SERVED: 9.0})
    offers("promote", "--version", "1")
    refused = offers("promote", "--version", "2")
    assert refused.exit_code == 1
    assert "served-policy check failed" in refused.output and "10.0% less" in refused.output
    assert _champion(RANKER_MODEL, settings) == "1"


def test_force_needs_a_reason_and_is_recorded(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    log_version(settings, RANKER_MODEL, {NDCG: 0.50})
    offers("promote", "--version", "1")

    no_reason = offers("promote", "--version", "2", "--force")
    assert no_reason.exit_code == 2
    assert "--force needs --reason" in no_reason.output
    no_version = offers("promote", "--force", "--reason", "why not")
    assert no_version.exit_code == 2 and "give --version N" in no_version.output
    assert _champion(RANKER_MODEL, settings) == "1"

    forced = offers(
        "promote", "--version", "2", "--force", "--reason", "v1 breaks on [new] plans", "--by", "bo"
    )
    assert forced.exit_code == 0, forced.output
    assert (
        "version 2 is now champion (forced: checks skipped; they would have refused"
        in forced.output
    )
    tags = tracking.get_version(RANKER_MODEL, "2", settings).tags
    assert tags["forced"] == "true" and tags["promoted_by"] == "bo"
    assert tags["promotion_reason"] == "v1 breaks on [new] plans"
    assert tags["promoted_from"] == "1"
    # Free text is shown as written, not read as markup.
    assert "v1 breaks on [new] plans" in offers("models", "list").stdout


def test_rollback_says_from_which_to_which_and_a_second_undoes_it(settings: Settings) -> None:
    _two_rankers(settings)
    first = offers("rollback", "--model", RANKER_MODEL, "--reason", "bad invoices", "--by", "cy")
    assert first.exit_code == 0, first.output
    assert "offer-ranker: champion 2 → 1 (rolled back)" in first.output
    assert _champion(RANKER_MODEL, settings) == "1"
    tags = tracking.get_version(RANKER_MODEL, "1", settings).tags
    assert (tags["rolled_back_from"], tags["rolled_back_by"]) == ("2", "cy")
    assert tags["rollback_reason"] == "bad invoices"

    second = offers("rollback", "--model", RANKER_MODEL)
    assert second.exit_code == 0, second.output
    assert "offer-ranker: champion 1 → 2 (rolled back)" in second.output
    assert _champion(RANKER_MODEL, settings) == "2"


def test_rollback_without_a_previous_champion_is_refused(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    offers("promote")
    refused = offers("rollback", "--model", RANKER_MODEL)
    assert refused.exit_code == 1
    assert "offer-ranker has no previous_champion to roll back to" in refused.output
    assert _champion(RANKER_MODEL, settings) == "1"
    # Both models by default: churn has no champion at all; nothing moves.
    both = offers("rollback")
    assert both.exit_code == 1 and "churn-risk has no champion to roll back" in both.output


def test_plain_promote_is_unchanged(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    first = offers("promote", "--model", RANKER_MODEL)
    assert first.exit_code == 0, first.output
    assert "offer-ranker: version 1 is now champion (promoted: no champion yet" in first.output
    log_version(settings, RANKER_MODEL, {NDCG: 0.605})  # within the margin
    kept = offers("promote")
    assert kept.exit_code == 0, kept.output
    assert "offer-ranker: champion stays 1 (kept: candidate 2 is not better by the margin" in (
        kept.output
    )
    assert "churn-risk: champion stays none (kept: no registered version to promote)" in (
        kept.output
    )
    log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    assert "version 3 is now champion" in offers("promote").output
    assert tracking.alias_version(RANKER_MODEL, "previous_champion", settings) == "1"


def _served_report(objective: float | None) -> Any:
    """A served-policy report with the same figures for every policy."""
    from pipelines.policy_evaluation import POLICIES, PolicyEvaluation

    figures = {
        "with_offer": 1.0,
        "off_policy": {
            "ips": {"value": 0.3},
            "snips": {"value": 0.3},
            "dr": {"value": 0.31, "low": 0.2, "high": 0.4},
            "effective_sample_size": 10.0,
        },
        "objective_value_sek": objective,
    }
    return PolicyEvaluation("2026-11", 10, {policy: figures for policy in POLICIES}, 12)


def test_the_logged_served_value_is_the_one_the_retrain_gate_compares() -> None:
    from pipelines.policy_evaluation import served_metrics, served_value

    for objective in (12.5, None):  # a simulated world, and a real one (no hidden acceptance)
        logged = served_metrics(_served_report(objective))
        first = next(name for name in SERVED_VALUE_METRICS if name in logged)
        assert logged[first] == pytest.approx(served_value(_served_report(objective)))


def test_the_retrain_leaves_the_champions_served_value_for_promote_version(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain's served-policy check and `offers promote --version` judge a candidate alike."""
    import pipelines.policy_evaluation
    from pipelines import retrain

    champion_ranker = log_version(settings, RANKER_MODEL, {NDCG: 0.60, SERVED: 9.0})
    log_version(settings, CHURN_MODEL, {"val_auc": 0.70})
    offers("promote")
    ranker = log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    churn = log_version(settings, CHURN_MODEL, {"val_auc": 0.80})

    def evaluate(settings: Settings, **options: Any) -> Any:
        # On the month the retrain replays, the champion is worth 12, the candidate 11 (8 % less).
        served_ranker = options["models"].ranker.version
        return _served_report(12.0 if served_ranker == champion_ranker.label else 11.0)

    monkeypatch.setattr(pipelines.policy_evaluation, "evaluate_served_policies", evaluate)
    trained = SimpleNamespace(
        ranker=SimpleNamespace(version=ranker), churn=SimpleNamespace(version=churn)
    )
    ctx = retrain.RetrainContext(tmp_path, settings, values={"train": trained})
    assert "(champion offer-ranker/1: 12.0000)" in retrain._served_policy(ctx)

    candidate = tracking.get_version(RANKER_MODEL, "2", settings)
    assert candidate.tags[SERVED_COMPARED_VERSION_TAG] == "1"
    assert candidate.metrics[CHAMPION_METRIC_PREFIX + SERVED] == pytest.approx(12.0)
    # Against the champion's own logged 9.0 the candidate would pass; on the same decisions not.
    refused = offers("promote", "--version", "2")
    assert refused.exit_code == 1
    assert "served-policy check failed (served_model_objective_value_sek, on the same logged " in (
        refused.output
    )
    assert "11.0000 per invoice against the champion's 12.0000" in refused.output
    assert "champion kept: its served policy is worth 11.0000" in retrain._promote(ctx)
    assert _champion(RANKER_MODEL, settings) == "1"
    assert _champion(CHURN_MODEL, settings) == "2"


def test_models_list_keeps_figures_whole_at_80_columns(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_rankers(settings)
    monkeypatch.setenv("COLUMNS", "80")
    text = offers("models", "list").stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "0.7000" in text and "9.2500" in text and "…" not in text  # nothing cut off
