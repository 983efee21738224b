"""The registered pyfunc against what the API serves, and versions logged before it existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from serving.scoring_model import ModelHolder, ModelLoader
from tests.factories.training import log_lightgbm_flavour_version, log_version, registry_settings
from training import tracking
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES
from training.registry import CHURN_MODEL, RANKER_MODEL, load_champion

pytestmark = pytest.mark.integration

PLATT = {"kind": "platt", "a": 1.7, "b": -0.4}
ISOTONIC = {"kind": "isotonic", "knots_x": [-2.0, 0.0, 2.0], "knots_y": [0.05, 0.3, 0.9]}


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return registry_settings(tmp_path)


def _rows(columns: list[str], count: int, seed: int) -> pd.DataFrame:
    """Model inputs as serving builds them (float64), with some missing values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 2.0, size=(count, len(columns)))
    values[rng.random(values.shape) < 0.1] = np.nan
    return pd.DataFrame(values, columns=columns)


def _pyfunc(settings: Settings, uri: str):  # type: ignore[no-untyped-def]
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(tracking.store_uri(settings))
    mlflow.set_registry_uri(tracking.store_uri(settings))
    return mlflow.pyfunc.load_model(uri)


def _champions(settings: Settings, ranker: dict, churn: dict) -> None:
    for name, calibrator, metric in (
        (RANKER_MODEL, ranker, "val_ndcg_at_3"),
        (CHURN_MODEL, churn, "val_auc"),
    ):
        version = log_version(settings, name, {metric: 0.7}, calibrator=calibrator)
        tracking.set_champion(name, version.version, settings)


def test_the_champions_pyfunc_predicts_the_probability_the_api_serves(settings: Settings) -> None:
    _champions(settings, ranker=PLATT, churn=ISOTONIC)
    serving = ModelHolder(ModelLoader.from_registry(settings)).start()
    assert serving.scorer is not None and serving.model_version == "offer-ranker/1"
    rows = _rows(RANKER_FEATURES, 200, seed=1)

    ranker = _pyfunc(settings, "models:/offer-ranker@champion")
    served = serving.scorer.acceptance(rows.to_numpy())
    # Columns are matched by name: a frame in another order gives the same answer.
    predicted = ranker.predict(rows[list(reversed(RANKER_FEATURES))])
    np.testing.assert_allclose(predicted, served, rtol=0, atol=1e-9)
    # The calibrator is inside: the booster's own sigmoid would differ.
    booster = serving.scorer._ranker.booster
    sigmoid = 1 / (1 + np.exp(-booster.predict(rows.to_numpy(), raw_score=True)))
    assert np.abs(predicted - sigmoid).max() > 0.01
    assert ranker.metadata.get_input_schema().input_names() == RANKER_FEATURES

    churn_rows = _rows(CHURN_FEATURES, 50, seed=2)
    churn = _pyfunc(settings, "models:/churn-risk@champion")
    risks = serving.scorer.churn_risks(churn_rows.to_numpy())
    np.testing.assert_allclose(churn.predict(churn_rows), risks, rtol=0, atol=1e-9)


def test_the_pyfunc_names_the_inputs_a_frame_lacks(settings: Settings) -> None:
    _champions(settings, ranker=PLATT, churn=ISOTONIC)
    ranker = _pyfunc(settings, "models:/offer-ranker@champion")
    with pytest.raises(Exception, match="shown_position"):
        ranker.predict(_rows(RANKER_FEATURES, 3, seed=3).drop(columns=["shown_position"]))


def test_the_api_serves_the_booster_and_calibrator_the_pyfunc_wraps(settings: Settings) -> None:
    _champions(settings, ranker=PLATT, churn=ISOTONIC)
    directory = tracking.model_directory(RANKER_MODEL, "1", settings)
    assert (directory / "artifacts" / "model.lgb").exists()
    assert (directory / "artifacts" / "calibrator.json").exists()
    assert not (directory / "model.lgb").exists()
    loaded = load_champion(RANKER_MODEL, settings)
    assert loaded.calibrator.to_dict() == PLATT


def test_a_version_logged_before_the_pyfunc_still_serves(settings: Settings) -> None:
    ranker = log_lightgbm_flavour_version(settings, RANKER_MODEL, PLATT)
    churn = log_lightgbm_flavour_version(settings, CHURN_MODEL, ISOTONIC)
    tracking.set_champion(RANKER_MODEL, ranker, settings)
    tracking.set_champion(CHURN_MODEL, churn, settings)

    serving = ModelHolder(ModelLoader.from_registry(settings)).start()
    assert serving.scorer is not None and serving.unavailable is None
    loaded = load_champion(RANKER_MODEL, settings)
    assert loaded.calibrator.to_dict() == PLATT  # from the MLmodel metadata
    rows = _rows(RANKER_FEATURES, 20, seed=4).to_numpy()
    raw = loaded.booster.predict(rows, raw_score=True)
    expected = 1 / (1 + np.exp(-(PLATT["a"] * raw + PLATT["b"])))
    np.testing.assert_allclose(serving.scorer.acceptance(rows), expected, rtol=0, atol=1e-9)
