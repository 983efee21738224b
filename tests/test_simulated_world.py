"""The session's simulated world: what it holds, and that a copy keeps its changes to itself."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.columns import CUSTOMER_KEY
from core.contract import TABLES
from features.store import open_store
from features.views import FEATURE_VIEWS
from tests.factories.training import log_version
from tests.simulated_world import CUSTOMERS, MONTHS, SEED, SimulatedWorld
from training import tracking
from training.registry import CHURN_MODEL, RANKER_MODEL, champion_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _files(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*") if path.is_file()}


def test_the_world_holds_tables_features_an_online_store_and_champions(
    simulated_world: SimulatedWorld,
) -> None:
    settings = simulated_world.settings
    simulation = simulated_world.simulation
    assert (simulation.customers, simulation.months, simulation.seed) == (CUSTOMERS, MONTHS, SEED)
    assert simulation.row_counts["customers"] == CUSTOMERS
    assert {table.file_name for table in TABLES} <= {p.name for p in settings.data_dir.iterdir()}
    assert {path.stem for path in settings.features_dir.glob("*.parquet")} == set(FEATURE_VIEWS)
    contracts = pd.read_parquet(settings.features_dir / "customer_contract.parquet")
    customer = str(contracts[CUSTOMER_KEY].iloc[0])
    online = (
        open_store(settings)
        .get_online_features(
            features=["customer_contract:current_plan_id"], entity_rows=[{CUSTOMER_KEY: customer}]
        )
        .to_dict()
    )
    assert str(online["current_plan_id"][0]).startswith("PLAN_")
    assert champion_version(RANKER_MODEL, settings) == "offer-ranker/1"
    assert champion_version(CHURN_MODEL, settings) == "churn-risk/1"
    assert simulated_world.trained.ranker.version.label == "offer-ranker/1"


def test_a_copy_points_every_store_at_itself_and_keeps_new_versions_to_itself(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    original = simulated_world.settings
    artifacts_before = _files(original.mlflow_artifact_root)
    copied = simulated_world.copy(tmp_path / "copy")
    copy_root = str((tmp_path / "copy").resolve())

    client = tracking.client(copied)
    for name in (RANKER_MODEL, CHURN_MODEL):
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None and copy_root in str(experiment.artifact_location)
        for version in client.search_model_versions(f"name = '{name}'"):
            model = client.get_model_version_download_uri(name, version.version)
            assert copy_root in model and str(simulated_world.root) not in model
            assert Path(tracking.model_directory(name, version.version, copied)).is_relative_to(
                copy_root
            )
    feature_tables = [
        Path(path)
        for source in open_store(copied).list_data_sources()
        if (path := getattr(source, "path", None))
    ]
    assert len(feature_tables) == len(FEATURE_VIEWS)
    assert all(path.is_relative_to(copied.features_dir.resolve()) for path in feature_tables)

    log_version(copied, RANKER_MODEL, {"val_ndcg_at_3": 0.5})
    assert [v.version for v in tracking.versions(RANKER_MODEL, copied)] == ["2", "1"]
    assert [v.version for v in tracking.versions(RANKER_MODEL, original)] == ["1"]
    assert _files(original.mlflow_artifact_root) == artifacts_before
    assert champion_version(RANKER_MODEL, copied) == "offer-ranker/1"
