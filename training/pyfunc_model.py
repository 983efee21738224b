"""The registered model as an MLflow pyfunc: a LightGBM booster and its calibrator.

``mlflow.pyfunc.load_model("models:/offer-ranker@champion").predict(frame)`` returns the
calibrated acceptance probability of each row, the value the API serves as
``acceptance_probability`` (the API rounds it to four decimals); for ``churn-risk`` the churn risk
the decision engine reads. ``frame`` has the model inputs (``training.model_inputs``) as float
columns; the signature lists them in the order the booster reads them, and rows are reordered by
name. The pyfunc needs this project installed where it is loaded (its class lives here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from training.served_model import (
    BOOSTER_ARTIFACT,
    CALIBRATOR_ARTIFACT,
    LoadedModel,
    ModelFiles,
    load_model_files,
)


class CalibratedBooster(PythonModel):
    """The booster's raw score through the calibrator, as serving computes it."""

    def load_context(self, context: Any) -> None:
        files = ModelFiles(
            booster=Path(context.artifacts[BOOSTER_ARTIFACT]),
            calibrator=Path(context.artifacts[CALIBRATOR_ARTIFACT]),
        )
        self._model: LoadedModel = load_model_files(files, version="pyfunc")

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        names = self._model.feature_names
        missing = [name for name in names if name not in model_input.columns]
        if missing:
            raise ValueError(
                f"rows lack model inputs: {', '.join(missing[:5])}"
                f"{' …' if len(missing) > 5 else ''}"
            )
        return self._model.predict_proba(model_input[names].to_numpy(dtype=np.float64))
