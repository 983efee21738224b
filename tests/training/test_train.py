"""Training end to end on the shared simulated world: features, Feast, LightGBM, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.catalog import load_catalog
from core.columns import EVENT_TIMESTAMP
from core.settings import Settings
from features.views import RANKER_SERVICE
from tests.simulated_world import SimulatedWorld
from training import data, tracking
from training.labels import RANKER_LABEL_DAYS, load_ranker_rows
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES, model_matrix
from training.point_in_time import join_features, join_ttl
from training.splits import PERIOD, TRAIN, TUNE, VALIDATION
from training.train import (
    CODE_FINGERPRINT_TAG,
    SkipKey,
    TrainingConfig,
    TrainResult,
    _already_trained,
    train_models,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG = Path(__file__).parents[2] / "catalog" / "offers.yaml"


@pytest.fixture(scope="module")
def world(simulated_world: SimulatedWorld) -> Settings:
    """The shared simulated world: tables, feature tables and the MLflow store it trained into."""
    return simulated_world.settings


@pytest.fixture(scope="module")
def trained(simulated_world: SimulatedWorld) -> TrainResult:
    """The world's first training, with the eligibility filter the retrain gives it."""
    return simulated_world.trained


def test_the_model_beats_both_baselines_on_ndcg_at_3(trained: TrainResult) -> None:
    figures = trained.ranker.metrics
    assert figures["val_ndcg_at_3"] > figures["val_popularity_ndcg_at_3"]
    assert figures["val_ndcg_at_3"] > figures["val_rules_ndcg_at_3"]
    assert figures["val_auc"] > 0.75
    assert figures["val_ece"] < 0.03  # the served probability is calibrated
    assert trained.churn.metrics["val_auc"] > 0.55
    assert trained.churn.metrics["val_top_decile_lift"] > 1.2


def test_the_model_is_small_enough_to_explain_on_the_request_path(trained: TrainResult) -> None:
    fitted = trained.ranker.fitted
    assert fitted is not None
    assert fitted.chosen.trees <= 300
    assert fitted.chosen.budget.num_leaves <= 31
    assert fitted.chosen.explain_ms < 5.0
    assert sum(row["chosen"] for row in fitted.tradeoff()) == 1


def test_runs_versions_and_artifacts_are_in_mlflow(world: Settings, trained: TrainResult) -> None:
    from training.registry import load_version

    for result, features in ((trained.ranker, RANKER_FEATURES), (trained.churn, CHURN_FEATURES)):
        version = result.version
        assert version.tags["feature_service"] in {"offer_ranker_v1", "churn_v1"}
        assert ".." in version.tags["train_window"]
        assert ".." in version.tags["validation_window"]
        client = tracking.client(world)
        run = client.get_run(version.run_id)
        assert run.data.tags["feature_service"] == version.tags["feature_service"]
        assert run.data.params["objective"] in {"binary", "lambdarank"}
        artifacts = {item.path for item in client.list_artifacts(version.run_id, "evaluation")}
        assert {"evaluation/report.md", "evaluation/report.json"} <= artifacts
        plots = {item.path for item in client.list_artifacts(version.run_id, "plots")}
        assert {
            "plots/feature_importance.png",
            "plots/calibration_curve.png",
            "plots/metrics_per_slice.png",
        } <= plots
        model_dir = tracking.model_directory(version.name, version.version, world)
        assert "signature" in (model_dir / "MLmodel").read_text()
        assert (model_dir / "input_example.json").exists()
        loaded = load_version(version.name, version.version, world)
        assert loaded.feature_names == features
        probability = loaded.predict_proba(np.zeros((3, len(features))))
        assert ((probability > 0) & (probability < 1)).all()
    client = tracking.client(world)
    path = client.download_artifacts(trained.ranker.version.run_id, "evaluation/report.json")
    report = json.loads(Path(path).read_text())
    assert set(report["overall"]) == {"model", "popularity", "rules"}
    assert {"tenure_under_2y", "age_18_29", "consent_profiling"} <= set(report["per_slice"])
    assert report["off_policy"]["estimates"]["model"]["snips"] is not None


def test_each_run_logs_its_three_periods_as_datasets(world: Settings, trained: TrainResult) -> None:
    for result in (trained.ranker, trained.churn):
        inputs = tracking.dataset_inputs(result.version.run_id, world)
        assert set(inputs) == {"training", "validation", "test"}
        assert inputs["training"]["rows"] == result.metrics["train_rows"]
        assert inputs["test"]["rows"] == result.metrics["validation_rows"]
        assert inputs["training"]["name"] == f"{result.name}-train"
        assert inputs["validation"]["tags"]["period"] == TUNE
        for logged in inputs.values():
            assert logged["tags"]["data_fingerprint"] == result.version.tags["data_fingerprint"]
            assert logged["source"] == Path(world.data_dir).resolve().as_uri()
        assert len({logged["digest"] for logged in inputs.values()}) == 3


def test_the_champions_pyfunc_gives_the_served_probability(
    world: Settings, trained: TrainResult
) -> None:
    import mlflow
    import mlflow.pyfunc

    from serving.scoring_model import ModelHolder, ModelLoader

    assert trained.ranker.validation_frame is not None
    rows = pd.DataFrame(
        model_matrix(trained.ranker.validation_frame.head(2_000), RANKER_FEATURES),
        columns=RANKER_FEATURES,
    )
    serving = ModelHolder(ModelLoader.from_registry(world)).start()
    assert serving.scorer is not None
    mlflow.set_tracking_uri(tracking.store_uri(world))
    mlflow.set_registry_uri(tracking.store_uri(world))
    pyfunc = mlflow.pyfunc.load_model("models:/offer-ranker@champion")
    served = serving.scorer.acceptance(rows.to_numpy())
    np.testing.assert_allclose(pyfunc.predict(rows), served, rtol=0, atol=1e-9)


def test_training_again_on_the_same_data_changes_nothing(
    world: Settings, trained: TrainResult
) -> None:
    again = train_models(settings=world)
    assert again.ranker.reused and again.churn.reused
    assert again.ranker.version.version == trained.ranker.version.version
    assert len(tracking.versions("offer-ranker", world)) == 1


def test_a_change_of_settings_or_code_trains_again_and_says_which(
    world: Settings, trained: TrainResult
) -> None:
    version_tags = trained.ranker.version.tags
    same = SkipKey.of(world.data_dir, world, TrainingConfig())
    assert same.changed_since(version_tags) == []
    other_settings = SkipKey.of(world.data_dir, world, TrainingConfig(seed=8))
    assert other_settings.changed_since(version_tags) == ["settings"]
    other_code = {**version_tags, CODE_FINGERPRINT_TAG: "older-code"}
    assert same.changed_since(other_code) == ["code"]
    assert _already_trained("offer-ranker", same, world) is not None
    assert _already_trained("offer-ranker", other_settings, world) is None
    # --force: trained again whatever is unchanged.
    assert _already_trained("offer-ranker", same, world, force=True) is None


def test_no_row_after_the_split_reaches_training(world: Settings) -> None:
    ranker = data.ranker_training_set(world.data_dir, world)
    split = ranker.split
    fitted_on = ranker.frame[ranker.frame[PERIOD].isin([TRAIN, TUNE])]
    known = fitted_on[EVENT_TIMESTAMP] + pd.Timedelta(days=RANKER_LABEL_DAYS)
    assert (known <= split.validation_start).all()
    validation = ranker.period(VALIDATION)
    assert (validation[EVENT_TIMESTAMP] >= split.validation_start).all()
    assert not set(validation["decision_id"]) & set(fitted_on["decision_id"])
    churn = data.churn_training_set(world.data_dir, world)
    fitted_months = churn.frame[churn.frame[PERIOD].isin([TRAIN, TUNE])]
    horizon_end = fitted_months[EVENT_TIMESTAMP] + pd.DateOffset(months=3)
    assert (horizon_end <= churn.split.validation_start).all()


def test_the_oracle_prefers_the_model_to_the_logging_policy(
    world: Settings, trained: TrainResult
) -> None:
    from pipelines.evaluation_oracle import LOGGING_POLICY, oracle_check

    assert trained.ranker.top_offers is not None
    assert trained.ranker.validation_frame is not None
    check = oracle_check(
        trained.ranker.top_offers,
        trained.ranker.validation_frame,
        world.data_dir,
        load_catalog(CATALOG),
    )
    expected = check.expected_acceptance
    assert set(expected) == {"model", "popularity", "rules", LOGGING_POLICY}
    assert all(0.0 < value < 1.0 for value in expected.values())
    assert expected["model"] > expected[LOGGING_POLICY]


def test_feast_and_the_pandas_join_give_the_same_rows(world: Settings) -> None:
    """Both point-in-time joins on the same entity rows; the pandas one is what training uses."""
    from features.repository import definitions
    from features.store import apply_repository

    for view in definitions().feature_views:
        unlimited = view.ttl is None or view.ttl.total_seconds() == 0
        expected = None if unlimited or view.ttl is None else pd.Timedelta(view.ttl)
        assert join_ttl(view.name) == expected, view.name

    apply_repository(world)
    rows = load_ranker_rows(world.data_dir)
    sample = rows.sample(300, random_state=1).sort_values(["decision_id", "rank"])
    entities = sample[["decision_id", "customer_id", "offer_id", EVENT_TIMESTAMP]]
    entities = entities.reset_index(drop=True)
    by_pandas = join_features(entities, RANKER_SERVICE, world, method="tables")
    by_feast = join_features(entities, RANKER_SERVICE, world, method="feast")
    inputs = [name for name in RANKER_FEATURES if name in by_pandas and name in by_feast]
    # Only the derived columns are added later; every stored input comes from both joins.
    assert set(RANKER_FEATURES) - set(inputs) == {
        "segment_is_business",
        "offer_new_customer_discount_sek",
        "shown_position",
    }
    assert list(by_feast["decision_id"]) == list(by_pandas["decision_id"])
    left = by_pandas[inputs].astype(float).to_numpy()
    right = by_feast[inputs].astype(float).to_numpy()
    assert np.allclose(left, right, rtol=1e-5, atol=1e-4, equal_nan=True)


def test_propensity_weights_are_inverse_clipped_and_average_one() -> None:
    from training.train import propensity_weights

    logged = pd.Series([0.5, 0.1, 0.01, None, 1.0])
    weights = propensity_weights(logged, cap=20.0)
    assert weights is not None
    raw = np.array([2.0, 10.0, 20.0, 1.0, 1.0])  # 1 / 0.01 = 100 clipped at 20; no propensity: 1
    assert weights == pytest.approx(raw / raw.mean())
    assert weights.mean() == pytest.approx(1.0)
    assert propensity_weights(logged, cap=0.0) is None


def test_the_ranker_says_how_its_training_rows_were_weighed(trained: TrainResult) -> None:
    assert trained.ranker.version.tags["training_weights"] == "each logged offer once"
    assert "training weights" in trained.ranker.report_markdown


def test_the_ranker_carries_its_training_windows_input_profile(
    world: Settings, trained: TrainResult
) -> None:
    from training.drift import profile_of
    from training.model_inputs import AGE_BANDS, MONITORED_INPUTS
    from training.registry import load_version

    version = trained.ranker.version
    profile = profile_of(load_version(version.name, version.version, world).metadata)
    assert profile is not None
    assert profile.window == version.tags["train_window"]
    assert set(profile.features) == set(MONITORED_INPUTS)
    # One row per logged decision of the training period, not one per shown offer.
    assert 0 < profile.rows < trained.ranker.metrics["train_rows"]
    for feature in profile.features.values():
        assert sum(feature.shares) == pytest.approx(1.0)
    assert len(profile.features["data_gb_avg_3m"].edges) == 9
    assert set(profile.features["age_band"].categories) <= {name for _, name in AGE_BANDS}
    assert "age" not in profile.features and "satisfaction" not in profile.features
