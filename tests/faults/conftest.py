"""The fault suite's shared fixtures: the two cores and an empty MLflow registry."""

from __future__ import annotations

import pytest

from tests.faults.services import Cores, split_cores


@pytest.fixture(scope="module")
def cores() -> Cores:
    return split_cores()


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An MLflow registry without models, shared by the module's servers (it is created at the
    first start, which costs seconds): rules decide."""
    folder = tmp_path_factory.mktemp("mlruns")
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "OFFERS_MLFLOW_ARTIFACT_ROOT": str(folder / "artifacts"),
    }
