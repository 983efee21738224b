"""The invoice run's Spark engine, for billing dates with millions of customers.

The day's invoices are spread over partitions by customer id range. Each partition reads the
feature rows of its own customers from the Parquet feature tables (filtered in the scan), builds a
:class:`~pipelines.frame_source.FrameFeatureSource` over them and decides every invoice with
:func:`~pipelines.invoice_run.core.decide_invoices`, as the local engine does, so both engines
(and the API) give the same decisions. The champion boosters travel to the executors as LightGBM
model strings in a broadcast, the catalog as its parsed object. The executors write their rows as
Parquet parts; the driver streams the parts into the same single file the local engine writes.

A logged run (the default) decides each partition with the local engine's logged slice
(:class:`~pipelines.invoice_run.logged.LoggedSlices`: the API's own offers service, experiments
applied, an invoice the log holds replayed), each task over a decision log connection of its own:
the executors must reach ``OFFERS_DATABASE_URL`` (a SQLite file on the one machine of
``local[N]``; PostgreSQL on a cluster) and, for an experiment with a challenger model, the model
registry (``MLFLOW_TRACKING_URI``), from which each task loads it. A customer's invoices are all
in one partition, so no task needs a decision another writes, and a task Spark runs again
replays what its first attempt wrote.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import make_url

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from core.settings import Settings
from pipelines.frame_source import FrameFeatureSource, read_decision_frames
from pipelines.invoice_run.core import (
    ORDER,
    ROW_COLUMNS,
    ChampionModels,
    DecisionOptions,
    InvoiceRunError,
    WrittenDecisions,
    decide_invoices,
    write_decisions,
)
from pipelines.invoice_run.logged import LOG_CALL_DEADLINE_SECONDS, LoggedSlices
from pipelines.invoice_run.slices import SliceOutcome
from serving.decision_log import DecisionLog
from training.calibration import Calibrator
from training.registry import LoadedModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

# Enough invoices per partition that reading its feature rows is worth a task.
INVOICES_PER_PARTITION = 20_000
RESULT_SCHEMA = (
    "invoice_id string, customer_id string, decision_id string, policy string, "
    "model_version string, offers string, usage_summary string, decision string"
)
INPUT_SCHEMA = "invoice_id string, customer_id string, decision_id string, declined array<string>"


@dataclass(frozen=True)
class ModelText:
    """A loaded model as plain values that pickle small: LightGBM's own text format."""

    model_string: str
    version: str
    feature_names: tuple[str, ...]
    calibrator: Mapping[str, Any]
    # The ranker's metadata: the segments' acceptance rates order non-personalised offers.
    metadata: Mapping[str, Any]

    @classmethod
    def from_loaded(cls, model: LoadedModel) -> ModelText:
        return cls(
            model_string=model.booster.model_to_string(),
            version=model.version,
            feature_names=tuple(model.feature_names),
            calibrator=model.calibrator.to_dict(),
            metadata=dict(model.metadata),
        )

    def load(self) -> LoadedModel:
        return LoadedModel(
            booster=lgb.Booster(model_str=self.model_string),
            version=self.version,
            feature_names=list(self.feature_names),
            calibrator=Calibrator.from_dict(self.calibrator),
            metadata=dict(self.metadata),
        )


@dataclass(frozen=True)
class PartitionJob:
    """Everything an executor needs to decide its partition's invoices."""

    paths: Mapping[str, str]
    catalog: Catalog
    options: DecisionOptions
    ranker: ModelText | None
    churn: ModelText | None
    # The settings of the decision log the executors write to; None: a --no-log run.
    log_settings: Settings | None = None

    @classmethod
    def create(
        cls,
        paths: Mapping[str, Path],
        catalog: Catalog,
        options: DecisionOptions,
        models: ChampionModels,
        log_settings: Settings | None = None,
    ) -> PartitionJob:
        ranker = churn = None
        if models.ranker is not None and models.churn is not None:
            ranker, churn = (
                ModelText.from_loaded(models.ranker),
                ModelText.from_loaded(models.churn),
            )
        # Absolute paths: executors need not share the driver's working directory.
        return cls(
            paths={view: str(Path(path).resolve()) for view, path in paths.items()},
            catalog=catalog,
            options=options,
            ranker=ranker,
            churn=churn,
            log_settings=log_settings,
        )

    def models(self) -> ChampionModels:
        if self.ranker is None or self.churn is None:
            return ChampionModels()
        return ChampionModels(ranker=self.ranker.load(), churn=self.churn.load())

    def decide(self, invoices: pd.DataFrame) -> SliceOutcome:
        """One partition: its customers' feature rows, then the shared decision per invoice
        (logged and counted as the local engine's slice, or with ``--no-log`` only decided)."""
        if invoices.empty:
            return SliceOutcome(rows=pd.DataFrame(columns=ROW_COLUMNS))
        # In the local engine's order: a customer's invoices of the day are decided one after
        # another (the decline cap), and a shuffle may hand a partition its rows in any order.
        invoices = invoices.sort_values(ORDER, kind="stable").reset_index(drop=True)
        as_of = self.options.features_moment
        paths = {view: Path(path) for view, path in self.paths.items()}
        declined = {
            invoice_id: frozenset(offers)
            for invoice_id, offers in zip(invoices["invoice_id"], invoices["declined"], strict=True)
            if offers is not None and len(offers)
        }
        if self.log_settings is not None:
            return self._decide_logged(
                invoices[["invoice_id", CUSTOMER_KEY, "decision_id"]], paths, declined
            )
        frames = read_decision_frames(
            paths,
            as_of,
            invoices[CUSTOMER_KEY],
            self.options.invoice_date,
            self.options.consent_changes,
        )
        source = FrameFeatureSource.from_frames(
            frames, as_of, invoice_date=self.options.invoice_date
        )
        rows = decide_invoices(
            invoices,
            source,
            self.catalog,
            self.options,
            scorer=self.models().scorer(),
            declined=declined,
        )
        return SliceOutcome(rows=pd.DataFrame(list(rows), columns=ROW_COLUMNS))

    def _decide_logged(
        self,
        invoices: pd.DataFrame,
        paths: Mapping[str, Path],
        declined: Mapping[str, frozenset[str]],
    ) -> SliceOutcome:
        """The partition as a slice of the local engine's logged run, over a log of its own."""
        settings = self.log_settings
        assert settings is not None
        log = DecisionLog.from_settings(settings, deadline_s=LOG_CALL_DEADLINE_SECONDS)
        try:
            slices = LoggedSlices(
                paths, self.catalog, self.options, self.models(), declined, settings, log
            )
        except BaseException:
            log.close()
            raise
        try:
            return slices.decide(invoices, self.options.features_moment)
        finally:
            slices.close()


@dataclass(frozen=True)
class SparkDecisions:
    """What a Spark run wrote to its output file, and to the decision log (a logged run)."""

    written: WrittenDecisions
    logged: int = 0  # decisions new to the log
    replayed: int = 0  # invoices the log already held a decision for
    conflicts: int = 0  # invoices the log holds for another customer: no row


def task_error_name(error: BaseException) -> str:
    """The innermost error named in a Spark task's failure (``OperationalError``,
    ``DecisionLogUnavailable``, …), or the Spark exception's own name."""
    names = re.findall(r"([A-Za-z_][\w.]*(?:Error|Exception|Unavailable))(?=:)", str(error))
    return names[-1].rsplit(".", 1)[-1] if names else type(error).__name__


def executor_settings(settings: Settings) -> Settings:
    """The settings a logged run's executors open the decision log and the registry with.

    A SQLite log is a file on one machine: refused unless the master runs every task on this
    one (``local[N]``), and named by its absolute path. The API's keys and secrets, which no task
    needs, stay out of the broadcast."""
    database_url = settings.database_url
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not settings.spark_master.startswith("local"):
            raise InvoiceRunError(
                f"the decision log is a SQLite file on this machine, and the Spark master "
                f"{settings.spark_master} runs tasks on others, each of which would write a log "
                "of its own: set OFFERS_DATABASE_URL to PostgreSQL, use --engine local, or pass "
                "--no-log"
            )
        if url.database and url.database != ":memory:":
            database_url = url.set(database=str(Path(url.database).resolve())).render_as_string()
    defaults = Settings.model_fields
    return settings.model_copy(
        update={
            "database_url": database_url,
            "api_keys": "",
            "session_secret": defaults["session_secret"].default,
            "online_store": defaults["online_store"].default,
            "registry_url": defaults["registry_url"].default,
        }
    )


def spark_session(settings: Settings) -> SparkSession:
    """A session on ``OFFERS_SPARK_MASTER`` whose Python workers run this interpreter."""
    from pyspark.sql import SparkSession

    # Without these the workers start the system Python, which lacks this environment's packages.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master(settings.spark_master)
        .appName("invoice-offers invoice run")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def _parts(folder: Path) -> Iterator[pa.Table]:
    """The Parquet parts Spark wrote, in partition order (the order of their names)."""
    for path in sorted(folder.glob("part-*.parquet")):
        yield pq.read_table(path)


def decide_with_spark(
    invoices: pd.DataFrame,
    paths: Mapping[str, Path],
    catalog: Catalog,
    options: DecisionOptions,
    models: ChampionModels,
    declined: Mapping[str, frozenset[str]],
    settings: Settings,
    *,
    out: Path,
    spark: SparkSession | None = None,
    log_decisions: bool = False,
) -> SparkDecisions:
    """Decide the day's invoices in Spark and write them to ``out`` as the local engine does.

    Partitions are customer id ranges, each sorted by customer and invoice id, so the parts in
    partition order are the local engine's order. The executors write them next to ``out``; the
    driver streams them into the one file, never holding more than a part. A session passed in
    is left running; one started here is stopped at the end. ``log_decisions``: each partition's
    decisions are written to the decision log of ``settings`` (see the module's description).
    """
    from pyspark.sql import SparkSession

    # Refused here, before Spark starts, when the executors could not share the log.
    log_settings = executor_settings(settings) if log_decisions else None
    if invoices.empty:
        return SparkDecisions(write_decisions([], options.invoice_date, out))
    owned = spark is None and SparkSession.getActiveSession() is None
    session = spark or spark_session(settings)
    staging = Path(out).with_name(f".{Path(out).name}.{uuid.uuid4().hex}.parts")
    try:
        job = session.sparkContext.broadcast(
            PartitionJob.create(
                paths,
                catalog,
                options,
                models,
                log_settings,
            )
        )
        # What the partitions found in the log and wrote to it. Spark keeps only a successful
        # attempt's counts: a task run again (an executor lost) replays what its failed attempt
        # wrote, so those decisions count as replayed, not as written by this run.
        counts = {
            name: session.sparkContext.accumulator(0)
            for name in ("written", "replayed", "conflicts")
        }
        frame = pd.DataFrame(
            {
                "invoice_id": invoices["invoice_id"].astype(str),
                CUSTOMER_KEY: invoices[CUSTOMER_KEY].astype(str),
                "decision_id": invoices["decision_id"].astype(str),
                "declined": [
                    sorted(declined.get(str(invoice_id), frozenset()))
                    for invoice_id in invoices["invoice_id"]
                ],
            }
        )
        partitions = max(
            session.sparkContext.defaultParallelism,
            math.ceil(len(frame) / INVOICES_PER_PARTITION),
        )

        def decide_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            # One feature read per partition, not per Arrow batch.
            parts = list(batches)
            if parts:
                outcome = job.value.decide(pd.concat(parts, ignore_index=True))
                counts["written"].add(outcome.written)
                counts["replayed"].add(outcome.replayed)
                counts["conflicts"].add(outcome.conflicts)
                yield outcome.rows

        try:
            (
                session.createDataFrame(frame, schema=INPUT_SCHEMA)
                .repartitionByRange(partitions, CUSTOMER_KEY)
                .mapInPandas(decide_partition, schema=RESULT_SCHEMA)
                .sortWithinPartitions(*ORDER)
                .write.mode("overwrite")
                .parquet(str(staging))
            )
        except Exception as error:
            # A task's failure reaches the driver as Spark's own exception, the task's traceback
            # in its text: named here by its error alone (the text may hold ids of customers).
            if not type(error).__module__.startswith(("pyspark", "py4j")):
                raise
            raise InvoiceRunError(
                f"a Spark task failed ({task_error_name(error)}); no output was written. Run "
                "again: the decisions already logged are replayed, not made twice"
            ) from error
        job.unpersist()
        written = write_decisions(_parts(staging), options.invoice_date, out)
        logger.info("spark decided %d invoices in %d partitions", written.decided, partitions)
        return SparkDecisions(
            written,
            logged=counts["written"].value,
            replayed=counts["replayed"].value,
            conflicts=counts["conflicts"].value,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if owned:
            session.stop()
