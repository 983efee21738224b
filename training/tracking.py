"""Every MLflow call of the project: experiments, runs, artifacts, registered models, aliases.

MLflow is imported inside the functions: importing it costs about a second, and ``offers --help``
or a serving process that loads the model file directly should not pay for it.

Each training run logs the rows it was fitted and judged on as MLflow datasets (inputs of the run,
contexts ``training``, ``validation`` and ``test``) and registers the model as a pyfunc
(``training.pyfunc_model``) whose artifacts are the booster and the calibrator serving reads.

Layout: the tracking URI comes from ``settings.mlflow_tracking_uri`` (a SQLite file in ``mlruns/``
by default, or ``postgresql://…``), and every experiment keeps its artifacts under
``settings.mlflow_artifact_root/<experiment>``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd

from core.database import sqlalchemy_url
from core.settings import Settings, get_settings
from training.calibration import Calibrator
from training.served_model import (
    BOOSTER_ARTIFACT,
    CALIBRATOR_ARTIFACT,
    CALIBRATOR_FILE,
    MLMODEL_FILE,
    MODEL_FILE,
)

if TYPE_CHECKING:
    import lightgbm as lgb
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
# Kept on every promotion so that `offers rollback` can move `champion` back to it.
PREVIOUS_CHAMPION_ALIAS = "previous_champion"
MODEL_ARTIFACT = "model"
# What an MLflow dataset's context says of the rows: fitted on, early stopping and calibration
# (the tune period), held out until evaluation (the validation period).
DATASET_CONTEXTS = ("training", "validation", "test")
SCHEMA_SAMPLE_ROWS = 1_000


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version with what promotion and serving need to know about it."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    # When the version was registered, in milliseconds since the epoch (as MLflow keeps it).
    created_ms: int | None = None

    @property
    def label(self) -> str:
        """``offer-ranker/3``: the form serving reports as ``model_version``."""
        return f"{self.name}/{self.version}"


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def store_uri(settings: Settings) -> str:
    """The tracking URI MLflow is given: a PostgreSQL one with the psycopg (3) driver this
    project installs (``postgresql://`` and ``postgresql+psycopg2://`` are rewritten)."""
    return sqlalchemy_url(settings.mlflow_tracking_uri)


def _prepare_store(settings: Settings) -> None:
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        # sqlite:///relative/path or sqlite:////absolute/path; the folder must exist.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def client(settings: Settings | None = None) -> MlflowClient:
    """A client bound to the configured tracking and registry store."""
    from mlflow import MlflowClient

    resolved = _settings(settings)
    _prepare_store(resolved)
    uri = store_uri(resolved)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _artifact_location(settings: Settings, experiment: str) -> str:
    root = str(settings.mlflow_artifact_root)
    if "://" in root:
        return f"{root.rstrip('/')}/{experiment}"
    path = (Path(root) / experiment).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """The id of the experiment ``name``, created with its artifact location when new."""
    resolved = _settings(settings)
    mlflow_client = client(resolved)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(
        mlflow_client.create_experiment(name, artifact_location=_artifact_location(resolved, name))
    )


@dataclass(frozen=True)
class TrainingTable:
    """Rows a model was fitted or judged on, logged as an MLflow dataset of the run.

    Only the schema, the row count, ``source`` and ``digest`` reach MLflow, never a row.
    ``digest`` is derived from the fingerprints training already keys its reruns on (input
    tables and catalog, training settings), so equal digests mean equal rows.
    """

    name: str
    context: str
    frame: pd.DataFrame
    source: str
    digest: str
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.context not in DATASET_CONTEXTS:
            raise ValueError(f"dataset context {self.context!r}; known: {DATASET_CONTEXTS}")


@dataclass(frozen=True)
class RunRecord:
    """What one training run logs: the caller assembles it, this module writes it."""

    experiment: str
    model_name: str
    run_name: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    text_artifacts: Mapping[str, str]
    figures: Mapping[str, Any]  # artifact path -> matplotlib Figure
    input_example: pd.DataFrame
    output_example: Any
    model_metadata: Mapping[str, Any]
    version_tags: Mapping[str, str]
    calibrator: Calibrator = field(default_factory=Calibrator)
    training_tables: Sequence[TrainingTable] = ()


def log_training_run(
    record: RunRecord, booster: lgb.Booster, settings: Settings | None = None
) -> VersionInfo:
    """Log params, metrics, reports, plots, the training tables and the model; register it as a
    new version.

    The model is a pyfunc (``training.pyfunc_model.CalibratedBooster``) whose artifacts are the
    booster and its calibrator; its signature's inputs are the booster's inputs in order.
    """
    import lightgbm
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from training.pyfunc_model import CalibratedBooster

    resolved = _settings(settings)
    experiment_id = ensure_experiment(record.experiment, resolved)
    mlflow.set_tracking_uri(store_uri(resolved))
    mlflow.set_registry_uri(store_uri(resolved))
    signature = infer_signature(record.input_example, record.output_example)
    with (
        tempfile.TemporaryDirectory(prefix="model-files-") as folder,
        # Logging the pyfunc loads it back to check the input example; its download progress
        # bars would only clutter `offers train`'s output.
        _environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
        mlflow.start_run(experiment_id=experiment_id, run_name=record.run_name) as run,
    ):
        mlflow.set_tags(dict(record.tags))
        mlflow.log_params({key: _param(value) for key, value in record.params.items()})
        mlflow.log_metrics({key: float(value) for key, value in record.metrics.items()})
        for table in record.training_tables:
            _log_table(table)
        for path, text in record.text_artifacts.items():
            mlflow.log_text(text, path)
        for path, figure in record.figures.items():
            mlflow.log_figure(figure, path)
        booster_file = Path(folder) / MODEL_FILE
        booster.save_model(str(booster_file))
        calibrator_file = record.calibrator.write(Path(folder) / CALIBRATOR_FILE)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=CalibratedBooster(),
            artifacts={
                BOOSTER_ARTIFACT: str(booster_file),
                CALIBRATOR_ARTIFACT: str(calibrator_file),
            },
            signature=signature,
            input_example=record.input_example,
            registered_model_name=record.model_name,
            # The pyfunc's class is this project's: it loads where invoice-offers is installed.
            pip_requirements=[
                f"lightgbm=={lightgbm.__version__}",
                f"mlflow=={mlflow.__version__}",
                f"pandas=={pd.__version__}",
            ],
            metadata=json.loads(json.dumps(dict(record.model_metadata))),
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    mlflow_client = client(resolved)
    for key, value in record.version_tags.items():
        mlflow_client.set_model_version_tag(record.model_name, version, key, value)
    mlflow_client.update_model_version(
        record.model_name, version, description=record.tags.get("description", "")
    )
    log.info("logged %s version %s (run %s)", record.model_name, version, run_id)
    return get_version(record.model_name, version, resolved)


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Environment variables set for the block and put back as they were after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _log_table(table: TrainingTable) -> None:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        # The schema MLflow infers for the dataset describes the table as it is; its hint about
        # integer columns concerns model signatures, and the model's signature is all floats.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        # MLflow registers its local-file source twice and warns that a file URI matches both.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = from_pandas(
            table.frame, source=table.source, name=table.name, digest=table.digest
        )
        # MLflow infers a dataset's schema from every row: 20 s for 400,000 training rows. The
        # columns' types are the frame's, so a sample of rows gives the same schema in a blink.
        sample = table.frame.sample(min(len(table.frame), SCHEMA_SAMPLE_ROWS), random_state=0)
        dataset.__dict__["schema"] = infer_signature(sample).inputs
        mlflow.log_input(dataset, context=table.context, tags=dict(table.tags))


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def log_to_run(
    run_id: str,
    metrics: Mapping[str, float] | None = None,
    text_artifacts: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> None:
    """Add metrics and text artifacts to a finished run (the oracle check comes after training)."""
    mlflow_client = client(settings)
    for key, value in (metrics or {}).items():
        mlflow_client.log_metric(run_id, key, float(value))
    for path, text in (text_artifacts or {}).items():
        mlflow_client.log_text(run_id, text, path)


def _version_info(mlflow_client: MlflowClient, version: Any) -> VersionInfo:
    metrics: dict[str, float] = {}
    if version.run_id:
        metrics = dict(mlflow_client.get_run(version.run_id).data.metrics)
    return VersionInfo(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id or "",
        tags=dict(version.tags or {}),
        aliases=tuple(version.aliases or ()),
        metrics=metrics,
        created_ms=version.creation_timestamp,
    )


def get_version(name: str, version: str, settings: Settings | None = None) -> VersionInfo:
    mlflow_client = client(settings)
    return _version_info(mlflow_client, mlflow_client.get_model_version(name, version))


def champion(name: str, settings: Settings | None = None) -> VersionInfo | None:
    """The version carrying the ``champion`` alias, or None (no such model or no champion)."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        version = mlflow_client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    return _version_info(mlflow_client, version)


def champion_alias(name: str, settings: Settings | None = None) -> str | None:
    """The version number the ``champion`` alias points to, or None (no such model or alias).

    One registry lookup and nothing more (no run, no model file): serving asks it every few
    seconds. Unlike :func:`champion`, a registry that fails to answer raises instead of reading
    as "no champion", so that a caller never mistakes an outage for an empty registry.
    """
    return alias_version(name, CHAMPION_ALIAS, settings)


def alias_version(name: str, alias: str, settings: Settings | None = None) -> str | None:
    """The version number ``alias`` points to, or None (no such model or alias); a registry
    that fails to answer raises."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        RESOURCE_DOES_NOT_EXIST,
        ErrorCode,
    )

    # MLflow answers an unknown model with RESOURCE_DOES_NOT_EXIST and a model without the alias
    # with INVALID_PARAMETER_VALUE; the names asked for here are always valid.
    absent = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}
    try:
        version = client(settings).get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in absent:
            return None
        raise
    return str(version.version)


def versions(name: str, settings: Settings | None = None) -> list[VersionInfo]:
    """Every version of a registered model, newest first, with its aliases; empty when the model
    does not exist."""
    mlflow_client = client(settings)
    found = mlflow_client.search_model_versions(f"name = '{name}'")
    if not found:
        return []
    # A search leaves the versions' aliases out; the registered model has them all.
    aliases: dict[str, list[str]] = {}
    for alias, version in mlflow_client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    ordered = sorted(found, key=lambda v: int(v.version), reverse=True)
    return [
        replace(
            _version_info(mlflow_client, version),
            aliases=tuple(sorted(aliases.get(str(version.version), []))),
        )
        for version in ordered
    ]


def version_numbers(name: str, settings: Settings | None = None) -> list[str]:
    """The version numbers of a registered model, oldest first (no run is read)."""
    found = client(settings).search_model_versions(f"name = '{name}'")
    return [str(number) for number in sorted(int(version.version) for version in found)]


def latest_version(name: str, settings: Settings | None = None) -> VersionInfo | None:
    """The newest version (the candidate for promotion), or None."""
    mlflow_client = client(settings)
    found = mlflow_client.search_model_versions(f"name = '{name}'")
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return _version_info(mlflow_client, newest)


def set_champion(name: str, version: str, settings: Settings | None = None) -> None:
    """Point the ``champion`` alias at ``version``."""
    set_alias(name, CHAMPION_ALIAS, version, settings)


def set_alias(name: str, alias: str, version: str, settings: Settings | None = None) -> None:
    """Point ``alias`` at ``version`` (MLflow moves it off the version it was on)."""
    client(settings).set_registered_model_alias(name, alias, version)


def set_version_tags(
    name: str, version: str, tags: Mapping[str, str], settings: Settings | None = None
) -> None:
    """Set tags on a registered version (the promotion and rollback records)."""
    mlflow_client = client(settings)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


def model_directory(name: str, version: str, settings: Settings | None = None) -> Path:
    """A local folder holding the version's model files (downloaded when the store is remote)."""
    import mlflow.artifacts

    mlflow_client = client(settings)
    uri = mlflow_client.get_model_version_download_uri(name, version)
    parsed = urlparse(uri)
    if parsed.scheme in {"", "file"}:
        local = Path(unquote(parsed.path))
        if (local / MLMODEL_FILE).exists():
            return local
    target = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-"))
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri,
            dst_path=str(target),
            tracking_uri=store_uri(_settings(settings)),
        )
    )


def dataset_inputs(run_id: str, settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The datasets a run logged, by context: name, digest, source, row count and tags."""
    run = client(settings).get_run(run_id)
    found: dict[str, dict[str, Any]] = {}
    for dataset_input in run.inputs.dataset_inputs if run.inputs else ():
        tags = {tag.key: tag.value for tag in dataset_input.tags}
        dataset = dataset_input.dataset
        profile = json.loads(dataset.profile or "{}")
        found[tags.get("mlflow.data.context", "")] = {
            "name": dataset.name,
            "digest": dataset.digest,
            "source": json.loads(dataset.source).get("uri", dataset.source),
            "rows": profile.get("num_rows"),
            "tags": {k: v for k, v in tags.items() if not k.startswith("mlflow.")},
        }
    return found
