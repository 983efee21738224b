"""The model lifecycle against a real MLflow registry: previous_champion kept on every promotion,
a chosen version promoted through the gate or forced, rollback, and the versions' overview."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tests.factories.training import log_version, registry_settings
from training import tracking
from training.registry import (
    CHAMPION_METRIC_PREFIX,
    CHURN_MODEL,
    RANKER_MODEL,
    SERVED_COMPARED_VERSION_TAG,
    SERVED_OBJECTIVE_TAG,
    ModelInputsMismatch,
    RollbackRefused,
    UnknownVersion,
    promote_models,
    promote_version,
    rollback_models,
    summarize_versions,
)

pytestmark = pytest.mark.integration

NDCG = "val_ndcg_at_3"
SERVED = "served_model_objective_value_sek"
OBJECTIVE = SERVED_OBJECTIVE_TAG
WINDOWS = {"train_window": "2025-01-01..2026-06-01", "validation_window": "2026-06-01..2026-09-01"}


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return registry_settings(tmp_path, promote_margin=0.01)  # type: ignore[no-any-return]


def _aliases(name: str, settings: Settings) -> dict[str, str | None]:
    return {
        alias: tracking.alias_version(name, alias, settings)
        for alias in (tracking.CHAMPION_ALIAS, tracking.PREVIOUS_CHAMPION_ALIAS)
    }


def test_every_promotion_keeps_the_champion_it_replaces_as_previous_champion(
    settings: Settings,
) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    promote_models(RANKER_MODEL, settings, by="ops-bot")
    # The first champion replaces none: no previous_champion.
    assert _aliases(RANKER_MODEL, settings) == {"champion": "1", "previous_champion": None}
    first = tracking.get_version(RANKER_MODEL, "1", settings).tags
    assert first["promoted_by"] == "ops-bot" and first["promoted_from"] == ""
    assert first["forced"] == "false" and "no champion yet" in first["promotion_reason"]

    log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    assert promote_models(RANKER_MODEL, settings, reason="weekly retrain")[0].promoted
    assert _aliases(RANKER_MODEL, settings) == {"champion": "2", "previous_champion": "1"}
    second = tracking.get_version(RANKER_MODEL, "2", settings).tags
    assert second["promoted_from"] == "1" and second["promotion_reason"] == "weekly retrain"
    assert second["promoted_by"]  # the login name, whatever it is here
    assert second["promoted_at"].endswith("+00:00")

    # A refused candidate moves neither alias.
    log_version(settings, RANKER_MODEL, {NDCG: 0.50})
    assert not promote_models(RANKER_MODEL, settings)[0].promoted
    assert _aliases(RANKER_MODEL, settings) == {"champion": "2", "previous_champion": "1"}


def test_a_chosen_version_passes_the_same_gate(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    log_version(settings, RANKER_MODEL, {NDCG: 0.55})
    promote_version(RANKER_MODEL, "1", settings)  # no champion yet: any comparable version
    decision = promote_version(RANKER_MODEL, "2", settings, by="alice")
    assert decision.promoted and not decision.forced and decision.champion_version == "1"
    assert _aliases(RANKER_MODEL, settings) == {"champion": "2", "previous_champion": "1"}
    tags = tracking.get_version(RANKER_MODEL, "2", settings).tags
    assert tags["promoted_by"] == "alice" and tags["promoted_from"] == "1"
    assert "0.7000 against champion 1's 0.6000" in tags["promotion_reason"]

    # Not the newest: version 3 is worse, so the newest is not what promote --version looks at.
    refused = promote_version(RANKER_MODEL, "3", settings)
    assert not refused.promoted and not refused.already_champion
    assert refused.reason.startswith("primary-metric check failed (short by 0.1600): ")
    assert _aliases(RANKER_MODEL, settings) == {"champion": "2", "previous_champion": "1"}

    again = promote_version(RANKER_MODEL, "2", settings)
    assert again.already_champion and "already champion" in again.reason


def test_the_served_policy_check_applies_when_both_runs_have_it(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60, SERVED: 10.0})
    promote_models(RANKER_MODEL, settings)
    # Better NDCG, but a served policy worth 5 % less than the champion's (tolerance 2 %).
    log_version(settings, RANKER_MODEL, {NDCG: 0.70, SERVED: 9.5})
    refused = promote_version(RANKER_MODEL, "2", settings)
    assert not refused.promoted
    assert refused.reason.startswith("served-policy check failed (" + SERVED + ", each as logged)")
    assert "9.5000 per invoice against the champion's 10.0000 (5.0% less" in refused.reason
    # Within the tolerance: promoted.
    log_version(settings, RANKER_MODEL, {NDCG: 0.70, SERVED: 9.9})
    assert promote_version(RANKER_MODEL, "3", settings).promoted
    # Without the figure on the candidate's run the primary metric alone decides.
    log_version(settings, RANKER_MODEL, {NDCG: 0.80})
    assert promote_version(RANKER_MODEL, "4", settings).promoted


def test_served_values_of_different_objectives_are_not_compared_each_as_logged(
    settings: Settings,
) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60, SERVED: 10.0}, tags={OBJECTIVE: "old"})
    promote_models(RANKER_MODEL, settings)
    # Worth 5 % less, but measured with another objective: the primary metric alone decides,
    # and the reason says the served values were not compared.
    log_version(settings, RANKER_MODEL, {NDCG: 0.70, SERVED: 9.5}, tags={OBJECTIVE: "new"})
    decision = promote_version(RANKER_MODEL, "2", settings)
    assert decision.promoted
    assert "served values not compared" in decision.reason
    # The champion's figure on the candidate's own decisions is compared whatever the objective.
    log_version(
        settings,
        RANKER_MODEL,
        {NDCG: 0.80, SERVED: 9.0, CHAMPION_METRIC_PREFIX + SERVED: 10.0},
        tags={OBJECTIVE: "newer", SERVED_COMPARED_VERSION_TAG: "2"},
    )
    refused = promote_version(RANKER_MODEL, "3", settings)
    assert not refused.promoted and "on the same logged decisions" in refused.reason


def test_the_champions_served_value_on_the_same_decisions_is_preferred(
    settings: Settings,
) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.60, SERVED: 10.0})
    promote_models(RANKER_MODEL, settings)
    # The retrain replayed the same month with both: there the champion was worth 12.
    log_version(
        settings,
        RANKER_MODEL,
        {NDCG: 0.70, SERVED: 11.0, CHAMPION_METRIC_PREFIX + SERVED: 12.0},
        tags={SERVED_COMPARED_VERSION_TAG: "1"},
    )
    refused = promote_version(RANKER_MODEL, "2", settings)
    assert not refused.promoted
    assert "on the same logged decisions" in refused.reason and "12.0000" in refused.reason


def test_a_forced_promotion_needs_a_reason_and_is_recorded(settings: Settings) -> None:
    log_version(settings, RANKER_MODEL, {NDCG: 0.70})
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    promote_models(RANKER_MODEL, settings)  # the newest, 2, beats no champion
    with pytest.raises(ValueError, match="needs a reason"):
        promote_version(RANKER_MODEL, "1", settings, force=True, reason="  ")
    decision = promote_version(
        RANKER_MODEL, "1", settings, force=True, reason="v2 mis-scores roaming", by="bob"
    )
    assert decision.promoted and decision.forced
    assert "checks skipped; they would have passed" in decision.describe()
    tags = tracking.get_version(RANKER_MODEL, "1", settings).tags
    assert tags["forced"] == "true" and tags["promoted_by"] == "bob"
    assert tags["promotion_reason"] == "v2 mis-scores roaming" and tags["promoted_from"] == "2"
    assert _aliases(RANKER_MODEL, settings) == {"champion": "1", "previous_champion": "2"}


def test_a_version_that_does_not_exist_or_reads_other_inputs_is_refused(
    settings: Settings,
) -> None:
    with pytest.raises(UnknownVersion, match="no version 1 of offer-ranker; versions: none"):
        promote_version(RANKER_MODEL, "1", settings)
    log_version(settings, RANKER_MODEL, {NDCG: 0.60})
    log_version(settings, RANKER_MODEL, {NDCG: 0.70}, feature_names=["a", "b"])
    with pytest.raises(UnknownVersion, match=r"no version 7 of offer-ranker; versions: 1, 2$"):
        promote_version(RANKER_MODEL, "7", settings)
    promote_version(RANKER_MODEL, "1", settings)
    # Serving would refuse it: forcing does not help, and the champion stays.
    with pytest.raises(ModelInputsMismatch, match="other inputs"):
        promote_version(RANKER_MODEL, "2", settings, force=True, reason="try it")
    assert _aliases(RANKER_MODEL, settings)["champion"] == "1"


def test_rollback_swaps_the_aliases_and_a_second_undoes_it(settings: Settings) -> None:
    for metrics in ({NDCG: 0.60}, {NDCG: 0.70}):
        log_version(settings, RANKER_MODEL, metrics)
        promote_models(RANKER_MODEL, settings)
    for auc in (0.70, 0.80):
        log_version(settings, CHURN_MODEL, {"val_auc": auc})
        promote_models(CHURN_MODEL, settings)

    rolled = rollback_models(settings=settings, by="carol", reason="complaints about v2")
    assert [r.describe() for r in rolled] == [
        "offer-ranker: champion 2 → 1 (rolled back)",
        "churn-risk: champion 2 → 1 (rolled back)",
    ]
    assert _aliases(RANKER_MODEL, settings) == {"champion": "1", "previous_champion": "2"}
    assert _aliases(CHURN_MODEL, settings) == {"champion": "1", "previous_champion": "2"}
    tags = tracking.get_version(RANKER_MODEL, "1", settings).tags
    assert tags["rolled_back_from"] == "2" and tags["rolled_back_by"] == "carol"
    assert tags["rollback_reason"] == "complaints about v2" and tags["rolled_back_at"]

    undone = rollback_models(RANKER_MODEL, settings)
    assert [r.describe() for r in undone] == ["offer-ranker: champion 1 → 2 (rolled back)"]
    assert _aliases(RANKER_MODEL, settings) == {"champion": "2", "previous_champion": "1"}
    assert _aliases(CHURN_MODEL, settings)["champion"] == "1"  # --model: the other stays


def test_rollback_without_a_previous_champion_is_refused_and_moves_nothing(
    settings: Settings,
) -> None:
    with pytest.raises(RollbackRefused, match="offer-ranker has no champion to roll back"):
        rollback_models(RANKER_MODEL, settings)
    for metrics in ({NDCG: 0.60}, {NDCG: 0.70}):
        log_version(settings, RANKER_MODEL, metrics)
        promote_models(RANKER_MODEL, settings)
    log_version(settings, CHURN_MODEL, {"val_auc": 0.70})
    promote_models(CHURN_MODEL, settings)
    # The ranker could go back, churn could not: with both asked for, neither moves.
    with pytest.raises(RollbackRefused, match="churn-risk has no previous_champion") as refused:
        rollback_models(settings=settings)
    assert "nothing rolled back (--model rolls back one model alone)" in str(refused.value)
    assert _aliases(RANKER_MODEL, settings) == {"champion": "2", "previous_champion": "1"}
    assert rollback_models(RANKER_MODEL, settings)[0].to_version == "1"


def test_rollback_to_a_version_serving_would_refuse_is_refused(settings: Settings) -> None:
    log_version(settings, CHURN_MODEL, {"val_auc": 0.70}, feature_names=["a", "b"])
    promote_models(CHURN_MODEL, settings)
    log_version(settings, CHURN_MODEL, {"val_auc": 0.80})
    promote_models(CHURN_MODEL, settings)
    with pytest.raises(RollbackRefused, match=r"other inputs.*champion stays 2"):
        rollback_models(CHURN_MODEL, settings)
    assert _aliases(CHURN_MODEL, settings) == {"champion": "2", "previous_champion": "1"}


def test_the_overview_has_aliases_metrics_windows_and_records(settings: Settings) -> None:
    assert summarize_versions(RANKER_MODEL, settings) == []
    log_version(settings, RANKER_MODEL, {NDCG: 0.60}, tags=WINDOWS)
    promote_models(RANKER_MODEL, settings)
    log_version(settings, RANKER_MODEL, {NDCG: 0.70, SERVED: 9.25}, tags=WINDOWS)
    promote_version(RANKER_MODEL, "2", settings, force=True, reason="hotfix", by="dana")
    log_version(settings, RANKER_MODEL, {"val_auc": 0.5})  # no NDCG, no windows
    newest, second, first = summarize_versions(RANKER_MODEL, settings)
    assert (newest.version, newest.aliases, newest.metric_value) == ("3", (), None)
    assert newest.train_window is None and newest.promotion is None
    assert second.aliases == ("champion",) and second.metric_value == pytest.approx(0.70)
    assert (second.served_metric, second.served_value) == (SERVED, pytest.approx(9.25))
    assert second.train_window == WINDOWS["train_window"]
    assert second.validation_window == WINDOWS["validation_window"]
    assert second.promotion is not None and second.promotion["forced"] is True
    assert second.promotion["by"] == "dana" and second.promotion["from"] == "1"
    assert first.aliases == ("previous_champion",) and first.served_value is None
    assert first.promotion is not None and first.promotion["from"] is None
    assert first.created_at is not None and first.created_at.endswith("+00:00")
    rollback_models(RANKER_MODEL, settings, by="erik")
    first = summarize_versions(RANKER_MODEL, settings)[2]
    assert first.aliases == ("champion",)
    assert first.rollback is not None and first.rollback["at"].endswith("+00:00")
    assert (first.rollback["by"], first.rollback["from"], first.rollback["reason"]) == (
        "erik",
        "2",
        None,
    )
