"""``offers experiments simulate KEY --cycles N``: an experiment run on a simulated world.

For each of the world's newest N months (a cycle), every invoice of that month (the ``invoices``
table) is decided by the API's own offers service (``OffersService.answer_many``, as the batch
endpoint and the invoice run): the running experiment assigns the customer a variant (only
customers who may be marketed to are enrolled), the engine decides under the variant's policy with
the log's decline cap, and the decisions are stored in the decision log, one write per part, with
decision ids derived from the invoice ids as the invoice run's are. The world's hidden behaviour
then answers each shown offer (``closed_loop.hidden_outcomes``), and its answers are stored as
offer events the way ``POST /v1/events`` stores them: an impression for every shown offer, then a
click, an accept or a decline. The experiment's report follows.

An invoice already decided in the log is left as it is, so running it again adds nothing. The
world's usage, bills and contracts do not change with the engine's offers (as in the closed loop).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.catalog import Catalog, load_catalog
from core.columns import CUSTOMER_KEY
from core.contract import INVOICES
from core.settings import Settings
from core.tables import read_table
from pipelines.closed_loop import ANSWER_DELAY, hidden_outcomes
from pipelines.evaluation_oracle import has_ground_truth
from pipelines.frame_source import decision_source, start_of_day
from pipelines.invoice_run.core import feature_paths
from pipelines.invoice_run.logged import (
    INVOICES_PER_WRITE,
    champions_loader,
    decision_ids_by_invoice,
)
from pipelines.invoice_run.run import load_champions
from serving.decision.arbitration import Objective
from serving.decision.consent import MODEL_PREFIX
from serving.decision.inputs import DecisionRequest
from serving.decision_log import DecisionLog, EventRecord
from serving.decision_log.ids import billing_run_decision_ids
from serving.experiments import ExperimentResults, Experiments, contract_exits, covers
from serving.offers import InvoiceAnswer, OffersService, ReadyFeatures
from serving.offers_response import offers_answer_json
from serving.scoring_model import ModelHolder

# What the simulator's outcome adds as events after the impression.
EVENTS_OF_OUTCOME = {
    "ignored": (),
    "clicked": ("click",),
    "accepted": ("click", "accept"),
    "declined": ("decline",),
}


@dataclass(frozen=True)
class SimulatedExperiment:
    """What the simulation stored, and the experiment's report afterwards."""

    months: tuple[str, ...]
    decisions: int
    enrolled: int
    events: int
    report: ExperimentResults


def simulate_experiment(
    key: str, cycles: int, settings: Settings, *, seed: int = 0
) -> SimulatedExperiment:
    """Run experiment ``key`` over the newest ``cycles`` months of the simulated world under
    ``settings.data_dir``, storing decisions and events in the configured decision log.

    Raises KeyError for no such experiment and ValueError for a folder that is not a simulated
    world or cycles below 1."""
    data_dir = Path(settings.data_dir)
    if cycles < 1:
        raise ValueError("--cycles must be at least 1")
    if not has_ground_truth(data_dir):
        raise ValueError(f"{data_dir} is not a simulated world: no hidden behaviour to answer")
    log = DecisionLog.from_settings(settings)
    try:
        experiments = Experiments(log, exits=lambda: contract_exits(data_dir))
        experiment = experiments.get(key)
        catalog = load_catalog(settings.catalog)
        objective = Objective.from_settings(settings)
        # The models as an API worker holds them: the champions, and the experiment's
        # challenger versions loaded before the first invoice.
        models = ModelHolder(champions_loader(load_champions(settings), settings))
        models.start(
            sorted({v.policy for v in experiment.variants if v.policy.startswith(MODEL_PREFIX)})
        )
        invoices = read_table(data_dir, INVOICES)[["invoice_id", CUSTOMER_KEY, "invoice_date"]]
        month_starts = invoices["invoice_date"].dt.to_period("M").dt.to_timestamp()
        months = sorted({day.date() for day in month_starts})[-cycles:]
        rng = np.random.default_rng(seed)
        paths = feature_paths(Path(settings.features_dir))
        decided = enrolled = stored_events = 0
        for month in months:
            of_month = invoices[month_starts == pd.Timestamp(month)]
            shown_rows: list[dict[str, object]] = []
            for day_key, group in of_month.groupby("invoice_date", sort=True):
                day = pd.Timestamp(day_key).date()
                if not covers(experiment, day):
                    continue
                as_of = start_of_day(day)
                group = group.sort_values("invoice_id", kind="stable")
                invoice_ids = group["invoice_id"].astype(str)
                decision_ids = decision_ids_by_invoice(
                    invoice_ids, billing_run_decision_ids(day, invoice_ids)
                )
                source = decision_source(paths, as_of, group[CUSTOMER_KEY], day)
                # The API's own service: the running experiment's arm, the engine, the decline
                # cap and one write per call; decision ids as the invoice run's. An invoice the
                # log holds is replayed, not decided again.
                service = OffersService(
                    catalog=catalog,
                    models=models,
                    log=log,
                    experiments=experiments,
                    feature_store=ReadyFeatures(source),
                    metrics=None,  # the simulation counts what it decided itself
                    render=offers_answer_json,
                    decline_cap_invoices=settings.decline_cap_invoices,
                    objective=objective,
                    decision_ids=decision_ids,
                )
                requests = [
                    DecisionRequest(
                        invoice_id=invoice_id,
                        customer_id=customer_id,
                        invoice_date=day,
                        locale="sv",
                        max_offers=3,
                    )
                    for invoice_id, customer_id in zip(
                        group["invoice_id"].astype(str),
                        group[CUSTOMER_KEY].astype(str),
                        strict=True,
                    )
                ]
                for start in range(0, len(requests), INVOICES_PER_WRITE):
                    part = requests[start : start + INVOICES_PER_WRITE]
                    held = log.find_many([request.invoice_id for request in part])
                    # An invoice already decided is left as it is, and so are its events.
                    fresh = [
                        request
                        for request in part
                        if request.invoice_id not in held or held[request.invoice_id].provisional
                    ]
                    for answer in service.answer_many(fresh) if fresh else ():
                        if not isinstance(answer, InvoiceAnswer):
                            continue  # an unknown customer, or an invoice of another customer
                        public = json.loads(answer.answer_json)
                        decided += 1
                        arm = public.get("experiment")
                        enrolled += arm is not None and arm.get("key") == experiment.key
                        for offer in public["offers"]:
                            shown_rows.append(
                                {
                                    "decision_id": public["decision_id"],
                                    CUSTOMER_KEY: public[CUSTOMER_KEY],
                                    "offer_id": offer["offer_id"],
                                    "shown_at": as_of,
                                    "rank": offer["rank"],
                                }
                            )
            if shown_rows:
                stored_events += _answer(pd.DataFrame(shown_rows), data_dir, catalog, rng, log)
        return SimulatedExperiment(
            months=tuple(month.isoformat()[:7] for month in months),
            decisions=decided,
            enrolled=enrolled,
            events=stored_events,
            report=experiments.report(key),
        )
    finally:
        log.close()


def _answer(
    shown: pd.DataFrame,
    data_dir: Path,
    catalog: Catalog,
    rng: np.random.Generator,
    log: DecisionLog,
) -> int:
    """Draw the hidden behaviour's answer to each shown offer and store it as events; returns
    how many were stored."""
    outcomes = hidden_outcomes(shown, data_dir, catalog, rng)
    stored = 0
    for decision_id, offer_id, moment, outcome in zip(
        shown["decision_id"].astype(str),
        shown["offer_id"].astype(str),
        pd.to_datetime(shown["shown_at"], utc=True),
        outcomes,
        strict=True,
    ):
        seen = moment.to_pydatetime()
        answered = seen + ANSWER_DELAY.to_pytimedelta()
        kinds = [("impression", seen)] + [(kind, answered) for kind in EVENTS_OF_OUTCOME[outcome]]
        for kind, at in kinds:
            # One event of a kind per shown offer: its id follows from them (and fits 64 chars).
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{decision_id}/{offer_id}/{kind}"))
            _, created = log.record_event(
                EventRecord(event_id, decision_id, offer_id, kind, at, at)
            )
            stored += created
    return stored
