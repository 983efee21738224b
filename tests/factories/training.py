"""Synthetic training frames with a known acceptance rule, for the training unit tests; tiny
registered versions and registries of their own, for the registry tests."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.model import FitSet
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES, SHOWN_POSITION


def acceptance_logit(frame: pd.DataFrame) -> np.ndarray:
    """The hidden rule: savings and data need drive acceptance; tenure lowers it a little."""
    saving = frame["fit_saving_sek_per_month"].to_numpy()
    need = frame["data_gb_avg_3m"].to_numpy() / 10.0
    offer_data = np.nan_to_num(frame["offer_data_gb"].to_numpy(), nan=100.0) / 30.0
    return -3.0 + 0.04 * saving + 0.8 * need * offer_data - 0.01 * frame["tenure_months"].to_numpy()


def ranker_frame(decisions: int, offers_per_decision: int = 3, seed: int = 0) -> pd.DataFrame:
    """One row per shown offer with every ranker input, a label, propensity and slice columns."""
    rng = np.random.default_rng(seed)
    rows = decisions * offers_per_decision
    frame = pd.DataFrame(
        rng.normal(0.0, 1.0, size=(rows, len(RANKER_FEATURES))), columns=RANKER_FEATURES
    )
    customer = np.repeat(np.arange(decisions), offers_per_decision)
    frame["decision_id"] = [f"D{i:06d}" for i in customer]
    frame["customer_id"] = [f"C{i % max(1, decisions // 2):06d}" for i in customer]
    offer_ids = np.array(
        ["PLAN_5GB", "PLAN_15GB", "PLAN_30GB", "ADDON_DATA_10GB", "LOYALTY_NEW_PRICE"]
    )
    frame["offer_id"] = rng.choice(offer_ids, size=rows)
    frame["rank"] = np.tile(np.arange(1, offers_per_decision + 1), decisions)
    frame[SHOWN_POSITION] = frame["rank"].astype(float)
    frame["propensity"] = rng.uniform(0.2, 0.9, size=rows)
    frame["data_gb_avg_3m"] = np.repeat(rng.gamma(2.0, 5.0, decisions), offers_per_decision)
    frame["tenure_months"] = np.repeat(rng.integers(0, 120, decisions), offers_per_decision)
    frame["age"] = np.repeat(rng.integers(18, 80, decisions), offers_per_decision)
    frame["consent_profiling"] = np.repeat(rng.integers(0, 2, decisions), offers_per_decision)
    frame["consent_usage_insights"] = np.repeat(rng.integers(0, 2, decisions), offers_per_decision)
    frame["fit_saving_sek_per_month"] = rng.normal(0.0, 40.0, rows)
    frame["offer_data_gb"] = rng.choice([5.0, 15.0, 30.0, np.nan], size=rows)
    probability = 1.0 / (1.0 + np.exp(-acceptance_logit(frame)))
    frame["label"] = (rng.random(rows) < probability).astype(float)
    frame["true_probability"] = probability
    frame["shown_at"] = pd.Timestamp("2026-01-28", tz="UTC") + pd.to_timedelta(
        customer % 300, unit="D"
    )
    return frame


def ranker_fit_set(frame: pd.DataFrame) -> FitSet:
    return FitSet(
        features=frame[RANKER_FEATURES].to_numpy(dtype=np.float32),
        labels=frame["label"].to_numpy(dtype=float),
        groups=frame["decision_id"].to_numpy(),
        feature_names=list(RANKER_FEATURES),
    )


def churn_fit_set(rows: int, seed: int = 0) -> FitSet:
    rng = np.random.default_rng(seed)
    features = rng.normal(0.0, 1.0, size=(rows, len(CHURN_FEATURES)))
    logit = -2.5 + 1.2 * features[:, 0] - 0.8 * features[:, 5]
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
    return FitSet(
        features=features.astype(np.float32),
        labels=labels,
        groups=np.arange(rows),
        feature_names=list(CHURN_FEATURES),
    )


def tiny_booster(feature_names: list[str], seed: int = 0, trees: int = 5):  # type: ignore[no-untyped-def]
    """A small binary booster over ``feature_names`` (for registry and serving tests)."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(400, len(feature_names)))
    labels = (features[:, 0] + rng.normal(size=400) > 0).astype(float)
    data = lgb.Dataset(features, labels, feature_name=feature_names, params={"verbosity": -1})
    params = {"objective": "binary", "num_leaves": 4, "verbosity": -1, "min_data_in_leaf": 5}
    return lgb.train(params, data, trees)


def log_version(  # type: ignore[no-untyped-def]
    settings,
    model_name: str,
    metrics: dict[str, float],
    feature_names: list[str] | None = None,
    tags: dict[str, str] | None = None,
    calibrator: dict | None = None,
    metadata: dict | None = None,
):
    """Register a version of ``model_name`` with the given run metrics; returns its VersionInfo.

    ``tags``: version tags beside the default objective's served-value tag (which a tag of that
    name replaces). ``metadata``: more of the model's metadata (the calibrator's is always
    there)."""
    from serving.decision.arbitration import DEFAULT_OBJECTIVE
    from training.calibration import Calibrator
    from training.registry import EXPECTED_FEATURES, SERVED_OBJECTIVE_TAG
    from training.tracking import RunRecord, log_training_run

    names = feature_names or list(EXPECTED_FEATURES[model_name])
    booster = tiny_booster(names)
    example = pd.DataFrame(np.zeros((2, len(names))), columns=names)
    record = RunRecord(
        experiment=model_name,
        model_name=model_name,
        run_name="test",
        params={"objective": "binary"},
        metrics=metrics,
        tags={"feature_service": "offer_ranker_v1"},
        text_artifacts={"evaluation/report.md": "# report\n"},
        figures={},
        input_example=example,
        output_example=booster.predict(example.to_numpy()),
        model_metadata={"calibrator": calibrator or {"kind": "sigmoid"}, **(metadata or {})},
        version_tags={SERVED_OBJECTIVE_TAG: DEFAULT_OBJECTIVE.valuation(), **(tags or {})},
        calibrator=Calibrator.from_dict(calibrator or {"kind": "sigmoid"}),
    )
    return log_training_run(record, booster, settings)


def log_lightgbm_flavour_version(  # type: ignore[no-untyped-def]
    settings, model_name: str, calibrator: dict
):
    """Register a version as training did before the pyfunc: MLflow's LightGBM flavour, the
    booster as model.lgb and the calibrator only in the MLmodel metadata. Returns its number."""
    import lightgbm
    import mlflow
    import mlflow.lightgbm

    from training.registry import EXPECTED_FEATURES
    from training.tracking import MODEL_ARTIFACT, ensure_experiment, store_uri

    names = list(EXPECTED_FEATURES[model_name])
    booster = tiny_booster(names, seed=3)
    example = pd.DataFrame(np.zeros((2, len(names))), columns=names)
    mlflow.set_tracking_uri(store_uri(settings))
    mlflow.set_registry_uri(store_uri(settings))
    with mlflow.start_run(experiment_id=ensure_experiment(model_name, settings)):
        info = mlflow.lightgbm.log_model(
            booster,
            name=MODEL_ARTIFACT,
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
            metadata={"calibrator": calibrator},
        )
    return str(info.registered_model_version)


_BLANK_REGISTRY: list[Path] = []


def registry_settings(folder: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    """Settings on an empty MLflow registry of their own in ``folder``.

    Creating MLflow's tables takes seconds; they are created once per process and the database
    file is copied for each registry.
    """
    from core.settings import Settings

    if not _BLANK_REGISTRY:
        template = Path(tempfile.mkdtemp(prefix="blank-mlflow-"))
        atexit.register(shutil.rmtree, template, True)
        blank = Settings(  # type: ignore[call-arg]
            _env_file=None,
            mlflow_tracking_uri=f"sqlite:///{template}/mlflow.db",
            mlflow_artifact_root=template / "artifacts",
        )
        from training.tracking import client

        client(blank).search_registered_models()  # creates the tables
        _BLANK_REGISTRY.append(template / "mlflow.db")
    database = folder / "mlruns" / "mlflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_BLANK_REGISTRY[0], database)
    return Settings(  # type: ignore[call-arg]
        _env_file=None,  # a developer's .env must not reach the tests
        mlflow_tracking_uri=f"sqlite:///{database}",
        mlflow_artifact_root=folder / "mlruns" / "artifacts",
        **overrides,
    )
