"""Promotion rules and champion loading against a temporary MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.settings import Settings
from tests.factories.training import log_version
from training import tracking
from training.model_inputs import RANKER_FEATURES
from training.registry import (
    CHAMPION_METRIC_PREFIX,
    CHURN_MODEL,
    COMPARED_VERSION_TAG,
    RANKER_MODEL,
    ModelInputsMismatch,
    champion_version,
    decide_promotion,
    load_champion,
    promote_models,
)


def _version(version: str, metrics: dict[str, float], tags: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return tracking.VersionInfo(RANKER_MODEL, version, "run", tags or {}, (), metrics)


def test_first_version_becomes_champion() -> None:
    decision = decide_promotion(RANKER_MODEL, _version("1", {"val_ndcg_at_3": 0.6}), None, 0.01)
    assert decision.promoted
    assert "no champion yet" in decision.describe()


def test_a_worse_candidate_is_refused_and_the_reason_given() -> None:
    champion = _version("1", {"val_ndcg_at_3": 0.60})
    decision = decide_promotion(RANKER_MODEL, _version("2", {"val_ndcg_at_3": 0.55}), champion, 0.0)
    assert not decision.promoted
    assert "champion stays 1" in decision.describe()
    assert "0.5500" in decision.reason and "0.6000" in decision.reason


def test_the_margin_must_be_cleared() -> None:
    champion = _version("1", {"val_ndcg_at_3": 0.600})
    slightly = _version("2", {"val_ndcg_at_3": 0.605})
    assert not decide_promotion(RANKER_MODEL, slightly, champion, 0.01).promoted
    assert decide_promotion(RANKER_MODEL, slightly, champion, 0.002).promoted


def test_the_like_for_like_figure_is_preferred() -> None:
    # On the new validation rows the champion scores 0.70, so 0.65 is worse although it beats
    # the champion's old figure of 0.60.
    champion = _version("1", {"val_ndcg_at_3": 0.60})
    candidate = _version(
        "2",
        {"val_ndcg_at_3": 0.65, "champion_val_ndcg_at_3": 0.70},
        {COMPARED_VERSION_TAG: "1"},
    )
    decision = decide_promotion(RANKER_MODEL, candidate, champion, 0.0)
    assert not decision.promoted
    assert decision.champion_value == pytest.approx(0.70)
    assert "candidate's validation rows" in decision.reason


def test_a_version_without_its_metric_is_not_promoted() -> None:
    decision = decide_promotion(CHURN_MODEL, _version("1", {"val_ndcg_at_3": 0.6}), None, 0.0)
    assert not decision.promoted
    assert "val_auc" in decision.reason


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,  # a developer's .env must not reach the tests
        data_dir=tmp_path / "raw",
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        mlflow_artifact_root=tmp_path / "mlruns" / "artifacts",
        promote_margin=0.01,
    )


def test_promotion_against_a_real_registry(settings: Settings) -> None:
    assert champion_version(RANKER_MODEL, settings) is None
    with pytest.raises(LookupError, match="no champion"):
        load_champion(RANKER_MODEL, settings)
    assert not promote_models(RANKER_MODEL, settings)[0].promoted  # nothing registered yet

    log_version(settings, RANKER_MODEL, {"val_ndcg_at_3": 0.60})
    first = promote_models(RANKER_MODEL, settings)[0]
    assert first.promoted and champion_version(RANKER_MODEL, settings) == "offer-ranker/1"

    log_version(settings, RANKER_MODEL, {"val_ndcg_at_3": 0.605})  # better, but within the margin
    refused = promote_models(RANKER_MODEL, settings)[0]
    assert not refused.promoted
    assert champion_version(RANKER_MODEL, settings) == "offer-ranker/1"

    log_version(
        settings,
        RANKER_MODEL,
        {"val_ndcg_at_3": 0.65},
        calibrator={"kind": "platt", "a": 2.0, "b": -1.0},
    )
    assert promote_models(RANKER_MODEL, settings)[0].promoted
    loaded = load_champion(RANKER_MODEL, settings)
    assert loaded.version == "offer-ranker/3"
    assert loaded.feature_names == RANKER_FEATURES
    assert loaded.calibrator.kind == "platt"
    features = np.zeros((3, len(RANKER_FEATURES)))
    raw = np.asarray(loaded.booster.predict(features, raw_score=True), dtype=float)
    assert loaded.predict_proba(features) == pytest.approx(1 / (1 + np.exp(-(2.0 * raw - 1.0))))
    again = promote_models(RANKER_MODEL, settings)[0]
    assert not again.promoted and "already champion" in again.reason


def test_a_registry_that_fails_is_not_read_as_no_champion(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    assert champion_version(RANKER_MODEL, settings) is None  # no such model: no champion
    log_version(settings, RANKER_MODEL, {"val_ndcg_at_3": 0.60})
    assert champion_version(RANKER_MODEL, settings) is None  # a model without the alias

    class Unavailable:
        def get_model_version_by_alias(self, name: str, alias: str) -> Any:
            raise MlflowException("registry busy", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(tracking, "client", lambda settings=None: Unavailable())
    with pytest.raises(MlflowException, match="registry busy"):
        champion_version(RANKER_MODEL, settings)
    with pytest.raises(MlflowException, match="registry busy"):
        load_champion(RANKER_MODEL, settings)


def test_a_champion_with_other_inputs_is_refused(settings: Settings) -> None:
    log_version(settings, CHURN_MODEL, {"val_auc": 0.7}, feature_names=["a", "b"])
    promote_models(CHURN_MODEL, settings)
    with pytest.raises(ModelInputsMismatch, match="other inputs"):
        load_champion(CHURN_MODEL, settings)


def test_unknown_model_names_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        promote_models("nope", settings)


def test_a_candidate_records_the_champions_figure_on_its_own_validation_rows() -> None:
    from training.train import _against_champion

    class Figures:
        def __init__(self, value: float) -> None:
            self.value = value

        def primary(self) -> float:
            return self.value

    seen: list[np.ndarray] = []

    def evaluate(probabilities: np.ndarray) -> Any:
        seen.append(probabilities)
        return Figures(float(probabilities.mean()))

    metrics = {"val_auc": 0.7}
    # No comparable champion: nothing recorded, no tag.
    assert _against_champion(CHURN_MODEL, None, evaluate, metrics) == {}
    assert metrics == {"val_auc": 0.7} and not seen
    tags = _against_champion(CHURN_MODEL, ("3", np.array([0.2, 0.4])), evaluate, metrics)
    # The champion's primary metric on the same rows, under the name promotion reads.
    assert tags == {COMPARED_VERSION_TAG: "3"}
    assert metrics == {"val_auc": 0.7, CHAMPION_METRIC_PREFIX + "val_auc": pytest.approx(0.3)}
