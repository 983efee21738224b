"""One invoice run: check the inputs, load the champions, decide with an engine, summarise."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy.exc import SQLAlchemyError

from core.catalog import load_catalog
from core.contract import INVOICES, OFFER_EVENTS
from core.settings import Settings, get_settings
from core.tables import read_table
from core.validation import require_valid
from pipelines.frame_source import start_of_day
from pipelines.invoice_run.core import (
    ORDER,
    ChampionModels,
    DecisionOptions,
    InvoiceRunError,
    check_features,
    feature_paths,
    invoices_of_day,
    recent_declines_by_invoice,
)
from pipelines.invoice_run.local import LocalSlices
from pipelines.invoice_run.logged import LOG_CALL_DEADLINE_SECONDS, LoggedSlices
from pipelines.invoice_run.slices import SlicedRun, decide_in_slices, run_key
from pipelines.invoice_run.spark import SparkDecisions, decide_with_spark
from serving.decision.arbitration import Objective
from serving.decision.inputs import Locale
from serving.decision_log import DecisionLog
from serving.decision_log.ids import billing_run_decision_ids
from serving.experiments import Experiments
from serving.scoring_model import ModelMismatch
from training.registry import CHURN_MODEL, RANKER_MODEL, load_champion

if TYPE_CHECKING:
    from rich.text import Text

logger = logging.getLogger(__name__)

ENGINES = ("local", "spark")


def load_champions(settings: Settings) -> ChampionModels:
    """Both champions from the registry; no champion yet: rules decide.

    A champion that exists but cannot be loaded stops the run rather than silently deciding
    millions of invoices by rules.
    """
    try:
        ranker = load_champion(RANKER_MODEL, settings)
        churn = load_champion(CHURN_MODEL, settings)
    except LookupError as error:
        logger.info("no champion model (%s): rules decide", error)
        return ChampionModels()
    except SQLAlchemyError as error:
        # Said as the registry's, not taken for the decision log's (the command's own answer to
        # a database error): the registry's database is another one.
        raise ValueError(
            f"the model registry (MLFLOW_TRACKING_URI) could not be read ({type(error).__name__})"
        ) from error
    return ChampionModels(ranker=ranker, churn=churn)


@dataclass(frozen=True)
class InvoiceRunSummary:
    """What one invoice run did; ``str()`` is the line the command prints."""

    invoice_date: dt.date
    out: Path
    engine: str
    invoices: int
    decided: int
    policies: Mapping[str, int]
    offers_shown: int
    model_version: str | None
    seconds: float
    decide_seconds: float  # deciding and writing
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # The decision log: None when the run did not write it (--no-log).
    logged: int | None = None  # decisions new to the log
    replayed: int = 0  # invoices the log already held a decision for
    conflicts: int = 0  # invoices the log holds for another customer
    experiment: str | None = None  # the experiment that assigned variants
    slices: int = 0  # slices of the local engine
    resumed_slices: int = 0  # slices an earlier, interrupted start had finished

    @property
    def unknown_customers(self) -> int:
        """Invoices whose customer the features have never seen (the API answers 404)."""
        return self.invoices - self.decided - self.conflicts

    @property
    def decisions_per_second(self) -> float:
        """Decisions per second of the deciding step (feature reads included, Spark start too)."""
        return self.decided / self.decide_seconds if self.decide_seconds > 0 else 0.0

    def _slice_lines(self) -> list[str]:
        if not self.slices:
            return []
        line = f"  slices: {self.slices:,}"
        if self.resumed_slices:
            line += f" ({self.resumed_slices:,} finished by an earlier start, not decided again)"
        return [line]

    def __str__(self) -> str:
        policies = ", ".join(f"{name} {count:,}" for name, count in sorted(self.policies.items()))
        model = self.model_version or "none (rules decide)"
        lines = [
            f"invoice run {self.invoice_date.isoformat()} ({self.engine}): {self.decided:,} of "
            f"{self.invoices:,} invoices decided in {self.seconds:.1f} s -> {self.out}",
            f"  deciding took {self.decide_seconds:.1f} s "
            f"({self.decisions_per_second:,.0f} decisions/s)",
            f"  policies: {policies or 'none'}; offers shown: {self.offers_shown:,}",
            *self._slice_lines(),
            f"  model: {model}",
        ]
        if self.logged is None:
            lines.append("  decision log: not written (--no-log); experiments are not applied")
        else:
            experiment = self.experiment or "none running"
            lines.append(
                f"  decision log: {self.logged:,} decisions written, {self.replayed:,} replayed; "
                f"experiment: {experiment}"
            )
        if self.conflicts:
            lines.append(
                f"  {self.conflicts:,} invoice{'' if self.conflicts == 1 else 's'} not decided: "
                "the log holds their decision for another customer"
            )
        if self.unknown_customers:
            skipped = self.unknown_customers
            lines.append(
                f"  {skipped:,} invoice{'' if skipped == 1 else 's'} skipped: "
                "customer not in the features"
            )
        lines.extend(f"  warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)

    def __rich__(self) -> Text:
        # The command prints with rich, which would otherwise show the dataclass's repr.
        from rich.text import Text

        return Text(str(self))


def _warnings(paths: Mapping[str, Path], as_of: dt.datetime) -> tuple[str, ...]:
    """Feature tables older than the invoice date: decisions would miss that day's billing."""
    billing = pq.read_metadata(paths["customer_billing"])
    if billing.num_rows == 0:
        return ("the billing feature table is empty",)
    newest = pq.read_table(paths["customer_billing"], columns=["event_timestamp"])
    latest = pd.Timestamp(pc.max(newest.column(0)).as_py())
    latest = latest.tz_localize("UTC") if latest.tzinfo is None else latest.tz_convert("UTC")
    if latest < pd.Timestamp(as_of):
        return (
            f"the newest billing features are from {latest.date().isoformat()}, before the "
            "invoice date; rebuild the features (`offers features build`) for this run",
        )
    return ()


def _no_invoices(data: Path, invoice_date: dt.date) -> tuple[str, ...]:
    """Why a run decided nothing: no invoice has its date, and the billing dates nearest it."""
    dates = read_table(data, INVOICES, columns=["invoice_date"])["invoice_date"].dt.date
    before = dates[dates < invoice_date].max() if (dates < invoice_date).any() else None
    after = dates[dates > invoice_date].min() if (dates > invoice_date).any() else None
    nearest = ", ".join(
        f"{label} {day.isoformat()}"
        for label, day in (("the last before", before), ("the first after", after))
        if day is not None
    )
    return (
        f"no invoice in the invoices table is dated {invoice_date.isoformat()}"
        + (f" ({nearest})" if nearest else "")
        + "; nothing was decided",
    )


def _consent_changes(settings: Settings, data: Path, moment: dt.datetime) -> pd.DataFrame | None:
    """The consent answers the API received by ``moment`` (``changes_known_at``): a run honours
    them as the API does, not only once a materialize and a sync have loaded them."""
    from sqlalchemy.exc import SQLAlchemyError

    from pipelines.consent_sync import changes_known_at

    try:
        return changes_known_at(settings, data, moment)
    except SQLAlchemyError as error:
        raise InvoiceRunError(
            f"the decision log database does not answer ({type(error).__name__}); the consent "
            "answers it holds must be honoured, so nothing was decided"
        ) from error


def _running_experiment(settings: Settings, invoice_date: dt.date) -> str | None:
    """The experiment running on the billing date, read from the decision log before Spark
    starts (a log the run cannot reach stops it there, before any task)."""
    log = DecisionLog.from_settings(settings, deadline_s=LOG_CALL_DEADLINE_SECONDS)
    try:
        running = Experiments(log).running_on(invoice_date)
    finally:
        log.close()
    return None if running is None else running.key


def run_invoice_run(
    invoice_date: dt.date,
    out: Path,
    engine: str = "local",
    *,
    locale: Locale = "sv",
    max_offers: int = 3,
    settings: Settings | None = None,
    data_dir: Path | None = None,
    features_dir: Path | None = None,
    models: ChampionModels | None = None,
    log_decisions: bool = True,
    features_as_of: dt.datetime | None = None,
    slice_invoices: int | None = None,
    workers: int = 1,
) -> InvoiceRunSummary:
    """Decide the offers of every invoice dated ``invoice_date`` and write them to ``out``.

    ``log_decisions`` (the default): the decisions are real decisions, made by the API's own
    service and written to the decision log (``OFFERS_DATABASE_URL``) in bulk, experiments
    applied; an invoice the log holds is replayed. False (``--no-log``, for what-if runs): the
    champion decides every invoice afresh and nothing is logged, locally or in Spark.

    The features are the newest rows up to ``features_as_of`` (default: now), as the API's
    online store holds them: consent the latest known, and the usage moved back to the
    invoice's billing period by the engine's time rule, so the run and the API decide alike
    whatever the day the run is made; the consent answers received through the API (stored in
    the decision log) applied on top, as the API honours them. Declines in ``offer_events`` count
    when known by 00:00 UTC on the invoice date.

    The local engine decides ``slice_invoices`` invoices at a time (default
    ``OFFERS_INVOICE_RUN_SLICE_INVOICES``), writing each slice atomically beside ``out``; a
    start after an interrupted one (``kill -9`` included) skips the slices it finished and
    decides the rest as of the same moment, so ``out`` is what an uninterrupted run writes
    (:mod:`.slices`). ``workers`` above one (local engine only) decides slices in that many
    processes; in a logged run each writes its slices' decisions to the log itself.

    ``models`` defaults to the registry's champions. Raises ``ContractError`` (invalid input
    tables), ``CatalogError`` or :class:`InvoiceRunError` (no feature tables, or more than one
    worker for Spark), all ``ValueError``, before anything is written.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be local or spark, not {engine!r}")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if workers > 1 and engine != "local":
        raise InvoiceRunError(
            "more than one worker decides only with the local engine; Spark sets its own "
            "parallelism (OFFERS_SPARK_MASTER)"
        )
    started = time.perf_counter()
    resolved = settings or get_settings()
    data = Path(data_dir or resolved.data_dir)
    catalog = load_catalog(resolved.catalog)
    features_folder = Path(features_dir or resolved.features_dir)
    require_valid(data, catalog, remember_in=features_folder)
    paths = feature_paths(features_folder)
    check_features(paths)
    moment = features_as_of or dt.datetime.now(dt.UTC)
    options = DecisionOptions(
        invoice_date=invoice_date,
        locale=locale,
        max_offers=max_offers,
        objective=Objective.from_settings(resolved),
        features_as_of=moment,
        consent_changes=_consent_changes(resolved, data, moment),
    )
    as_of = start_of_day(invoice_date)

    # In output order: each slice's rows follow the previous slice's.
    invoices = invoices_of_day(data, invoice_date).sort_values(ORDER, kind="stable")
    invoices = invoices.reset_index(drop=True)
    invoices["decision_id"] = billing_run_decision_ids(invoice_date, invoices["invoice_id"])
    events = read_table(data, OFFER_EVENTS)
    declined = recent_declines_by_invoice(events, as_of, resolved.decline_cap_invoices, invoices)
    del events
    champions = models if models is not None else load_champions(resolved)
    try:
        champions.scorer()  # refuses, before any decision, models whose inputs differ from ours
    except ModelMismatch as error:
        raise InvoiceRunError(str(error)) from error
    logger.info(
        "invoice run %s: %d invoices, policy %s, engine %s",
        invoice_date,
        len(invoices),
        champions.policy,
        engine,
    )

    deciding = time.perf_counter()
    sliced = None
    spark_run = None
    experiment = None
    if engine == "spark":
        if log_decisions:
            experiment = _running_experiment(resolved, invoice_date)
        spark_run = decide_with_spark(
            invoices,
            paths,
            catalog,
            options,
            champions,
            declined,
            resolved,
            out=out,
            log_decisions=log_decisions,
        )
        written = spark_run.written
    else:
        size = slice_invoices or resolved.invoice_run_slice_invoices
        key = run_key(
            invoices,
            size=size,
            settings={
                "invoice_date": invoice_date.isoformat(),
                "logged": log_decisions,
                "locale": locale,
                "max_offers": max_offers,
                "objective": repr(options.objective),
                "decline_cap_invoices": resolved.decline_cap_invoices,
                "features_as_of": None if features_as_of is None else features_as_of.isoformat(),
                "models": [
                    None if model is None else model.version
                    for model in (champions.ranker, champions.churn)
                ],
                "database": resolved.database_url if log_decisions else None,
            },
            feature_files=paths,
        )
        moment = options.features_moment
        if log_decisions:
            # Not the request path's deadline: the run's bulk writes take longer than a request.
            log = DecisionLog.from_settings(resolved, deadline_s=LOG_CALL_DEADLINE_SECONDS)
            try:
                logged_slices = LoggedSlices(
                    paths, catalog, options, champions, declined, resolved, log
                )
            except BaseException:
                log.close()
                raise
            try:
                if workers > 1:
                    logged_slices.release_log()
                sliced = decide_in_slices(
                    invoices,
                    day=invoice_date,
                    out=out,
                    size=size,
                    key=key,
                    features_as_of=moment,
                    decide=logged_slices.decide,
                    workers=workers,
                )
                experiment = logged_slices.experiment
            finally:
                logged_slices.close()
        else:
            sliced = decide_in_slices(
                invoices,
                day=invoice_date,
                out=out,
                size=size,
                key=key,
                features_as_of=moment,
                decide=LocalSlices(paths, catalog, options, champions, declined).decide,
                workers=workers,
            )
        written = sliced.written
    decided = time.perf_counter()
    counted: SlicedRun | SparkDecisions | None = sliced if sliced is not None else spark_run
    summary = InvoiceRunSummary(
        invoice_date=invoice_date,
        out=Path(out),
        engine=engine,
        invoices=len(invoices),
        decided=written.decided,
        policies=dict(written.policies),
        offers_shown=written.offers_shown,
        model_version=champions.model_version,
        seconds=time.perf_counter() - started,
        decide_seconds=decided - deciding,
        warnings=_warnings(paths, as_of) if len(invoices) else _no_invoices(data, invoice_date),
        logged=counted.logged if log_decisions and counted is not None else None,
        replayed=0 if counted is None else counted.replayed,
        conflicts=0 if counted is None else counted.conflicts,
        experiment=experiment if log_decisions else None,
        slices=0 if sliced is None else sliced.slices,
        resumed_slices=0 if sliced is None else sliced.resumed,
    )
    for warning in summary.warnings:
        logger.warning("invoice run %s: %s", invoice_date, warning)
    logger.info("%s", summary)
    return summary
