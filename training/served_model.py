"""A registered version's booster and calibrator: where they are kept, and the served probability.

Both the API and the registered pyfunc (``training.pyfunc_model``) read a version through
:func:`load_model_files`, from the same two files, so the probability MLflow's
``pyfunc.load_model(...).predict`` returns is the one the API serves. No MLflow import here:
serving loads the files directly and must not pay for it.

Layout of a version logged as a pyfunc: the booster (``model.lgb``) and the calibrator
(``calibrator.json``) are the pyfunc's artifacts, listed in its MLmodel file. Versions logged
before, in MLflow's LightGBM flavour, keep the booster as ``model.lgb`` beside the MLmodel file
and the calibrator in the MLmodel metadata; they load the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from training.calibration import Calibrator

MODEL_FILE = "model.lgb"
CALIBRATOR_FILE = "calibrator.json"
# The pyfunc's artifact names (the keys of ``context.artifacts`` and of the MLmodel file).
BOOSTER_ARTIFACT = "booster"
CALIBRATOR_ARTIFACT = "calibrator"
MLMODEL_FILE = "MLmodel"


@dataclass(frozen=True)
class ModelFiles:
    """Where one version keeps its booster and calibrator, and the MLmodel metadata.

    ``calibrator`` is None for a version logged in the LightGBM flavour: its calibrator is in
    ``metadata["calibrator"]`` (a binary booster's own sigmoid when absent).
    """

    booster: Path
    calibrator: Path | None
    metadata: dict[str, Any] = field(default_factory=dict)


def model_files(model_dir: Path) -> ModelFiles:
    """The files of the logged model in ``model_dir`` (a folder holding its MLmodel file)."""
    import yaml

    mlmodel = yaml.safe_load((model_dir / MLMODEL_FILE).read_text(encoding="utf-8")) or {}
    metadata = dict(mlmodel.get("metadata") or {})
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    artifacts = pyfunc.get("artifacts") or {}
    if BOOSTER_ARTIFACT in artifacts and CALIBRATOR_ARTIFACT in artifacts:
        return ModelFiles(
            booster=model_dir / artifacts[BOOSTER_ARTIFACT]["path"],
            calibrator=model_dir / artifacts[CALIBRATOR_ARTIFACT]["path"],
            metadata=metadata,
        )
    return ModelFiles(booster=model_dir / MODEL_FILE, calibrator=None, metadata=metadata)


@dataclass
class LoadedModel:
    """A booster ready for serving, with its calibrator.

    ``predict_proba`` is the served probability: the booster's raw score through the calibrator.
    Contributions (``pred_contrib``) are in raw-score units, as LightGBM gives them.
    """

    booster: lgb.Booster
    version: str
    feature_names: list[str]
    calibrator: Calibrator = field(default_factory=Calibrator)
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(features, raw_score=True, num_threads=1)
        return self.calibrator.apply(np.asarray(raw, dtype=float))


def load_model_files(files: ModelFiles, version: str) -> LoadedModel:
    """The booster and calibrator of ``files``; ``version`` is how serving names it."""
    booster = lgb.Booster(model_file=str(files.booster))
    if files.calibrator is not None:
        calibrator = Calibrator.read(files.calibrator)
    else:
        calibrator = Calibrator.from_dict(files.metadata.get("calibrator", {"kind": "sigmoid"}))
    return LoadedModel(
        booster=booster,
        version=version,
        feature_names=list(booster.feature_name()),
        calibrator=calibrator,
        metadata=files.metadata,
    )
