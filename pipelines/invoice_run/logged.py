"""The invoice run's decisions as real decisions: made by the API's own service, in the log.

The day's invoices go through :meth:`serving.offers.OffersService.answer_many`, the function
behind ``POST /v1/offers`` and ``POST /v1/offers/batch``, part after part: an invoice the log
already holds a decision for is replayed (a rerun duplicates nothing, and an invoice the API
decided keeps the API's decision), the running experiment assigns each customer's variant with
the API's assignment, and each part's new decisions are written in one transaction (a
customer's second invoice of the day in one after the first's, so that it sees the first in the
log as the API would). The decision ids are the run's (its ``decision_id`` column, in the
order the log writes them), and ``POST /v1/offers`` replays them; events for them are accepted
like any other.

The feature source is the run's frames as of the run's moment (what an online store materialised
then holds, as the API reads it), and the offers a customer declined lately are the decision
log's (as the API reads them) together with those of ``offer_events`` (the history the log may
not hold).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from core.settings import Settings
from pipelines.frame_source import decision_source, start_of_day
from pipelines.invoice_run.core import (
    ORDER,
    ROW_COLUMNS,
    ChampionModels,
    DecisionOptions,
    answer_row,
    loaded_objects_left_out_of_collections,
    slice_plan_fits,
)
from pipelines.invoice_run.slices import SliceOutcome, slice_bounds
from serving.decision.inputs import DecisionRequest
from serving.decision_log import DecisionLog
from serving.experiments import Experiments
from serving.offers import InvoiceAnswer, InvoiceCustomerConflict, OffersService, ReadyFeatures
from serving.offers_response import offers_answer_json
from serving.scoring_model import ModelHolder, ModelLoader
from training.registry import CHURN_MODEL, RANKER_MODEL, LoadedModel, load_version

logger = logging.getLogger(__name__)

# Invoices per call of the service: each call's new decisions are one transaction, and memory
# holds one call's decision records at a time. A customer's invoices share a call.
INVOICES_PER_WRITE = 2_000
# The longest one call to a PostgreSQL log may take in the run, in place of the request path's
# OFFERS_DATABASE_TIMEOUT_MS (2 s): a part's write (up to INVOICES_PER_WRITE decisions, their
# offers and the provisional decisions they replace, in one transaction) runs several statements,
# each under the server's 10 s statement_timeout, and must not be cut off like a request. A log
# that does not answer at all still ends the run with an error after this, instead of holding it.
LOG_CALL_DEADLINE_SECONDS = 120.0


def decision_ids_by_invoice(
    invoice_ids: Iterable[str], decision_ids: Iterable[str]
) -> Callable[[DecisionRequest], str]:
    """The offers service's ``decision_ids``: each invoice's id of the run."""
    by_invoice = dict(zip(invoice_ids, decision_ids, strict=True))
    return lambda request: by_invoice[request.invoice_id]


def champions_loader(models: ChampionModels, settings: Settings) -> ModelLoader:
    """The run's champions as the serving model holder loads them; challenger versions (for an
    experiment's ``model:<version>`` arm) from the registry."""
    by_name = {RANKER_MODEL: models.ranker, CHURN_MODEL: models.churn}

    def champion(name: str) -> LoadedModel:
        model = by_name.get(name)
        if model is None or not models.available:
            raise LookupError(f"{name} has no champion")
        return model

    def champion_version(name: str) -> str | None:
        model = by_name.get(name)
        return model.version if model is not None and models.available else None

    return ModelLoader(
        champion=champion,
        version=lambda name, version: load_version(name, version, settings),
        champion_version=champion_version,
    )


class LoggedSlices:
    """Decides slice after slice through one offers service: the champions, the experiments and
    the counters are set up once per run; each slice brings its own customers' feature rows.
    ``declined``: per invoice id, what the decline cap blocks in ``offer_events``
    (``recent_declines_by_invoice``), on top of the log's declines."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        catalog: Catalog,
        options: DecisionOptions,
        models: ChampionModels,
        declined: Mapping[str, frozenset[str]],
        settings: Settings,
        log: DecisionLog,
    ) -> None:
        self.paths = paths
        self.catalog = catalog
        self.options = options
        self.declined = declined
        self.settings = settings
        self.log = log
        self.experiments = Experiments(log)
        # The run's process, and the process whose connections ``log`` holds (None once
        # released): a worker forked from the run opens a log of its own.
        self._run_pid = os.getpid()
        self._log_pid: int | None = os.getpid()
        self.holder = ModelHolder(champions_loader(models, settings))
        # The challengers of the experiments not ended when the billing day starts.
        self.holder.start(self.experiments.challenger_policies(start_of_day(options.invoice_date)))
        running = self.experiments.running_on(options.invoice_date)
        self.experiment = None if running is None else running.key

    def release_log(self) -> None:
        """Close the log before the run forks its workers: a child must inherit no open
        connection (on PostgreSQL a socket two processes would write to; on SQLite the
        process's file locks and the WAL index, which SQLite keeps one record of per process)
        and no checkpointer thread. The next slice decided in this process opens it again."""
        self.log.close()
        self._log_pid = None

    def close(self) -> None:
        if self._log_pid == os.getpid():
            self.log.close()
        self._log_pid = None

    def _own_log(self) -> None:
        """A decision log of this process's own: opened again after :meth:`release_log`, and
        in each worker. Each worker's parts are transactions of their own; two workers' writes to
        a SQLite log wait for each other in SQLite's busy handler (a customer's invoices are all
        in one slice, so no worker reads what another writes)."""
        if self._log_pid == os.getpid():
            return
        self.log = DecisionLog.from_settings(self.settings, deadline_s=LOG_CALL_DEADLINE_SECONDS)
        self.experiments = Experiments(self.log)
        self._log_pid = os.getpid()

    def _check_run_alive(self) -> None:
        """In a worker: stop before writing another part once the run that forked it is gone,
        so that a restarted run is not deciding the same slices beside it."""
        if os.getpid() != self._run_pid and os.getppid() != self._run_pid:
            raise RuntimeError("the invoice run this worker decided for has ended")

    def decide(self, invoices: pd.DataFrame, as_of: dt.datetime) -> SliceOutcome:
        """Decide (or replay) one slice's invoices, writing its new decisions to the log; the
        output rows by customer and invoice id. ``invoices``: ``invoice_id``, ``customer_id`` and
        the run's ``decision_id`` of each."""
        self._own_log()
        options = self.options
        source = decision_source(
            self.paths, as_of, invoices[CUSTOMER_KEY], options.invoice_date, options.consent_changes
        )
        read, plan_fits = slice_plan_fits(
            source, invoices[CUSTOMER_KEY], self.catalog, options.invoice_date
        )
        service = OffersService(
            catalog=self.catalog,
            models=self.holder,
            log=self.log,
            experiments=self.experiments,
            feature_store=ReadyFeatures(read),
            metrics=None,  # counted in the run's summary
            render=offers_answer_json,
            decline_cap_invoices=self.settings.decline_cap_invoices,
            objective=options.objective,
            decision_ids=decision_ids_by_invoice(invoices["invoice_id"], invoices["decision_id"]),
            declined_elsewhere=self.declined,
            plan_fits=plan_fits,
        )
        requests = [
            DecisionRequest(
                invoice_id=str(invoice_id),
                customer_id=str(customer_id),
                invoice_date=options.invoice_date,
                locale=options.locale,
                max_offers=options.max_offers,
            )
            for invoice_id, customer_id in zip(
                invoices["invoice_id"], invoices[CUSTOMER_KEY], strict=True
            )
        ]
        rows: list[dict[str, Any]] = []
        conflicts = written = 0
        with loaded_objects_left_out_of_collections():
            for start, end in slice_bounds(invoices[CUSTOMER_KEY], INVOICES_PER_WRITE):
                self._check_run_alive()
                for answer in service.answer_many(requests[start:end]):
                    if isinstance(answer, InvoiceAnswer):
                        rows.append(answer_row(answer.answer_json))
                        # Counted here: the service keeps no metrics in a run (Prometheus
                        # counters would not do anyway: where another library switched
                        # prometheus_client to its multiprocess mode, as Feast does when its
                        # metrics module loads, counters of one name share their value).
                        written += answer.written
                    elif isinstance(answer, InvoiceCustomerConflict):
                        conflicts += 1
                    # An unknown customer is skipped, as the local engine skips it; the summary
                    # counts it.
        if conflicts:
            # No ids in the log: the summary counts these invoices.
            logger.warning("%d invoices are decided in the log for another customer", conflicts)
        frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
        return SliceOutcome(
            rows=frame.sort_values(ORDER, kind="stable").reset_index(drop=True),
            written=written,
            replayed=len(rows) - written,
            conflicts=conflicts,
        )
