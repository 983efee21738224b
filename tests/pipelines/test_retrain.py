"""``offers retrain`` end to end, a failing step, and the registry on a PostgreSQL backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pandas as pd
import pytest

from core.settings import Settings
from pipelines import retrain
from pipelines.retrain import STEPS, PipelineStepError, run_retrain
from serving.decision.arbitration import Objective
from tests.factories.training import log_version
from tests.simulated_world import SimulatedWorld
from training import tracking
from training.registry import (
    CHURN_MODEL,
    RANKER_MODEL,
    SERVED_OBJECTIVE_TAG,
    champion_version,
    load_champion,
    promote_models,
)
from training.train import TrainingConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def settings(simulated_world: SimulatedWorld, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A copy of the shared world: these tests retrain and register versions in it."""
    return simulated_world.copy(tmp_path_factory.mktemp("retrain"))


@pytest.fixture(scope="module")
def first_run(simulated_world: SimulatedWorld) -> retrain.RetrainResult:
    """The retrain that built the shared world (and so the copy) from its tables."""
    return simulated_world.retrain


def test_every_step_runs_in_order_and_promotes_the_first_versions(
    settings: Settings, first_run: retrain.RetrainResult
) -> None:
    assert [step.name for step in first_run.steps] == list(STEPS)
    assert all(step.seconds > 0 and step.peak_rss_mb > 0 for step in first_run.steps)
    assert champion_version(RANKER_MODEL, settings) == "offer-ranker/1"
    assert champion_version(CHURN_MODEL, settings) == "churn-risk/1"
    evaluated = first_run.steps[STEPS.index("evaluate")].detail
    assert "oracle expected acceptance" in evaluated
    assert "served policy value" in evaluated
    # The served policy's figures sit in the candidate's MLflow run.
    run_id = tracking.versions(RANKER_MODEL, settings)[0].run_id
    run = tracking.client(settings).get_run(run_id)
    assert 0.0 <= run.data.metrics["served_model_with_offer"] <= 1.0
    assert "served_model_lift_captured" in run.data.metrics
    assert "served_rules_objective_value_sek" in run.data.metrics
    assert "served_model_money_terms_value_sek" in run.data.metrics
    # ... and what they were measured with, for a later promotion's comparison.
    objective = tracking.versions(RANKER_MODEL, settings)[0].tags[SERVED_OBJECTIVE_TAG]
    assert objective == Objective.from_settings(settings).valuation()
    assert "accepted_offer_value_sek=150.0" in objective
    usage = pd.read_parquet(Path(settings.features_dir) / "customer_usage.parquet")
    raw_usage = pd.read_parquet(Path(settings.data_dir) / "usage_monthly.parquet")
    # One snapshot per customer and month of usage: nobody with usage is left out.
    assert len(usage) == len(raw_usage)
    assert set(usage["customer_id"]) == set(raw_usage["customer_id"])
    assert load_champion(RANKER_MODEL, settings).version == "offer-ranker/1"
    assert "total" in first_run.describe()


def test_a_ranker_whose_served_policy_is_worth_less_is_not_promoted() -> None:
    assert retrain.served_policy_blocks(9.7, 10.0) is not None  # 3 % below
    assert retrain.served_policy_blocks(9.85, 10.0) is None  # within 2 %
    assert retrain.served_policy_blocks(11.0, 10.0) is None
    assert retrain.served_policy_blocks(None, 10.0) is None  # nothing to compare with
    assert retrain.served_policy_blocks(5.0, None) is None
    assert "0.0800" in (retrain.served_policy_blocks(0.08, 0.09) or "")


def test_a_second_run_on_the_same_data_changes_nothing(
    settings: Settings, first_run: retrain.RetrainResult
) -> None:
    again = run_retrain(settings=settings, show_progress=False)
    train = again.steps[STEPS.index("train")].detail
    assert "unchanged data" in train
    assert "already champion" in again.steps[STEPS.index("promote")].detail
    assert champion_version(RANKER_MODEL, settings) == "offer-ranker/1"


def test_the_check_of_the_tables_is_recorded_in_a_new_feature_folder(
    settings: Settings, tmp_path: Path
) -> None:
    """The build step writes the feature tables into a folder the retrain may create: the check
    of the input tables is recorded there, so that the commands after it do not read them all
    again."""
    new_folder = tmp_path / "features"
    context = retrain.RetrainContext(
        Path(settings.data_dir), settings.model_copy(update={"features_dir": new_folder})
    )
    assert "checked in" in retrain.STEP_FUNCTIONS["validate"](context)
    assert "unchanged since they were checked" in retrain.STEP_FUNCTIONS["validate"](context)


def test_a_failing_step_leaves_the_champion_untouched(
    settings: Settings, first_run: retrain.RetrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: retrain.RetrainContext) -> str:
        raise RuntimeError("the oracle's ground truth is unreadable")

    monkeypatch.setitem(retrain.STEP_FUNCTIONS, "evaluate", broken)
    # Another seed is other training: a new version is registered before the failing step.
    with pytest.raises(PipelineStepError, match="step evaluate failed: the oracle's ground truth"):
        run_retrain(settings=settings, training_config=TrainingConfig(seed=8), show_progress=False)
    assert champion_version(RANKER_MODEL, settings) == "offer-ranker/1"
    assert champion_version(CHURN_MODEL, settings) == "churn-risk/1"


def test_bad_input_fails_the_first_step(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "raw"
    broken.mkdir()
    (broken / "customers.parquet").write_bytes(b"not parquet")
    with pytest.raises(PipelineStepError, match=r"^step validate failed: "):
        run_retrain(data_dir=broken, settings=settings, show_progress=False)
    assert champion_version(RANKER_MODEL, settings) == "offer-ranker/1"


def test_a_kept_version_never_evaluated_is_evaluated_once(
    settings: Settings, first_run: retrain.RetrainResult
) -> None:
    """The failing run above registered a seed-8 version and stopped before evaluating it, as
    `offers train` never evaluates: the next retrain keeps that version and measures its served
    policy then, and the one after reads it from the run."""
    seed_8 = TrainingConfig(seed=8)
    kept = run_retrain(settings=settings, training_config=seed_8, show_progress=False)
    evaluated = kept.steps[STEPS.index("evaluate")].detail
    assert "unchanged data" in kept.steps[STEPS.index("train")].detail
    assert "served policy value" in evaluated and "evaluated now" in evaluated
    version = kept.steps[STEPS.index("train")].detail.split("kept version ")[1].split()[0]
    run_id = next(
        v.run_id for v in tracking.versions(RANKER_MODEL, settings) if v.version == version
    )
    assert "served_model_dr" in tracking.client(settings).get_run(run_id).data.metrics
    again = run_retrain(settings=settings, training_config=seed_8, show_progress=False)
    assert "evaluated before" in again.steps[STEPS.index("evaluate")].detail


@pytest.fixture()
def postgres_settings(postgres_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A fresh database ``mlflow_test`` on the test server, dropped afterwards."""
    import psycopg

    server = urlparse(postgres_url)
    database = "mlflow_test"

    def admin(statement: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(statement)

    admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    admin(f"CREATE DATABASE {database}")
    url = urlunparse(server._replace(path=f"/{database}"))
    yield Settings(  # type: ignore[call-arg]
        _env_file=None,  # a developer's .env must not reach the tests
        mlflow_tracking_uri=url,
        mlflow_artifact_root=tmp_path / "artifacts",
        promote_margin=0.01,
    )  # type: ignore[misc]
    admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.mark.postgres
def test_registry_and_promotion_on_postgresql(postgres_settings: Settings) -> None:
    log_version(postgres_settings, RANKER_MODEL, {"val_ndcg_at_3": 0.70})
    assert promote_models(RANKER_MODEL, postgres_settings)[0].promoted
    log_version(postgres_settings, RANKER_MODEL, {"val_ndcg_at_3": 0.65})
    refused = promote_models(RANKER_MODEL, postgres_settings)[0]
    assert not refused.promoted
    assert "not better" in refused.reason
    loaded = load_champion(RANKER_MODEL, postgres_settings)
    assert loaded.version == "offer-ranker/1"
