"""What the invoice run's engines share: the day's invoices, the decision inputs, the output rows.

Both engines decide each invoice with :func:`decide_invoices` (the API's own
:func:`serving.decision.engine.decide`) and write through :func:`write_decisions`, so a local run,
a Spark run and the API give the same decisions, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from core.contract import INVOICES
from core.files import replacing
from core.tables import read_table
from pipelines.declined_offers import MOMENT, blocked_offers
from pipelines.frame_source import DECISION_VIEWS, start_of_day
from serving.decision.arbitration import DEFAULT_OBJECTIVE, Objective
from serving.decision.candidates import PlanFitTable
from serving.decision.decline_cap import DeclineCap
from serving.decision.engine import Decision, DecisionCall, decide_many
from serving.decision.inputs import (
    DecisionRequest,
    FeatureSource,
    Locale,
    UnknownCustomerError,
    usage_as_of,
)
from serving.offers_response import offers_answer_json
from serving.scoring_model import LightGBMScorer
from training.registry import LoadedModel

logger = logging.getLogger(__name__)

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("invoice_id", pa.string(), nullable=False),
        pa.field(CUSTOMER_KEY, pa.string(), nullable=False),
        pa.field("invoice_date", pa.date32(), nullable=False),
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("offers", pa.string(), nullable=False),
        pa.field("usage_summary", pa.string()),
        pa.field("decision", pa.string(), nullable=False),
    ]
)
# What a decision step yields per invoice, before the run's date is added.
ROW_COLUMNS = [name for name in OUTPUT_SCHEMA.names if name != "invoice_date"]
# The order of the output's rows.
ORDER = [CUSTOMER_KEY, "invoice_id"]
# Invoices decided in one engine call (one model call per step for all of them): enough that a
# call's fixed cost is spread thin, few enough that their open decisions stay small in memory.
DECIDED_TOGETHER = 1_000


class InvoiceRunError(ValueError):
    """The run cannot start: no feature tables, or a champion this code cannot serve."""


@dataclass(frozen=True)
class DecisionOptions:
    """What every decision of one run shares."""

    invoice_date: dt.date
    locale: Locale = "sv"
    max_offers: int = 3
    # The API's objective (weights, floors, exploration), so both decide alike.
    objective: Objective = DEFAULT_OBJECTIVE
    # The moment the feature tables are read as of; None: 00:00 UTC on the invoice date.
    features_as_of: dt.datetime | None = None
    # The consent answers received through the API, applied on top of the consent view as the
    # sync applies them online (``consent_sync.changes_known_at``); None: none.
    consent_changes: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    @property
    def features_moment(self) -> dt.datetime:
        """What the run knows: the newest feature rows up to this moment, as an online store
        materialised then holds them (usage moved back to the billing period by the engine)."""
        return self.features_as_of or start_of_day(self.invoice_date)

    def __post_init__(self) -> None:
        if self.locale not in ("sv", "en"):
            raise ValueError("locale must be sv or en")
        if not 0 <= self.max_offers <= 10:
            raise ValueError("max_offers must be 0–10")


@dataclass(frozen=True)
class ChampionModels:
    """The champion ranker and churn models a run decides with; both None: rules decide."""

    ranker: LoadedModel | None = None
    churn: LoadedModel | None = None

    @property
    def available(self) -> bool:
        return self.ranker is not None and self.churn is not None

    @property
    def policy(self) -> str:
        return "model" if self.available else "rules"

    @property
    def model_version(self) -> str | None:
        return self.ranker.version if self.ranker is not None and self.available else None

    def scorer(self) -> LightGBMScorer | None:
        """The API's scorer class over these models (it refuses models with other inputs)."""
        if self.ranker is None or self.churn is None:
            return None
        return LightGBMScorer(self.ranker, self.churn)


# --- inputs ---------------------------------------------------------------------------------------


def invoices_of_day(data_dir: Path, day: dt.date) -> pd.DataFrame:
    """``invoice_id`` and ``customer_id`` of the invoices dated ``day``, by invoice id."""
    # The day's rows are picked in Arrow, before millions of ids become Python strings. A date
    # column may be stored as dates or as UTC timestamps at midnight: as dates, both compare.
    invoices = read_table(
        data_dir,
        INVOICES,
        columns=[CUSTOMER_KEY, "invoice_date"],
        rows=lambda table: pc.equal(
            pc.cast(table["invoice_date"], pa.date32()), pa.scalar(day, pa.date32())
        ),
    )
    dated = invoices[["invoice_id", CUSTOMER_KEY]]
    return dated.sort_values("invoice_id", kind="stable").reset_index(drop=True)


def recent_declines(
    events: pd.DataFrame,
    before: dt.datetime,
    invoices: int,
    customer_ids: Iterable[str] | None = None,
) -> dict[str, frozenset[str]]:
    """Per customer, the offers the decline cap of ``invoices`` invoices blocks at ``before``.

    The customer's invoices are their decisions in ``offer_events`` shown before ``before``; a
    decline counts once it was recorded by then (or has no time). Customers without a blocked
    offer are left out.
    """
    chosen = events[CUSTOMER_KEY] if customer_ids is None else customer_ids
    customers = list(dict.fromkeys(str(customer) for customer in chosen))
    moments = pd.DataFrame({"customer_id": customers, "as_of": pd.Timestamp(before)})
    blocked = blocked_offers(events, moments, DeclineCap(invoices))
    declined: dict[str, set[str]] = {}
    for moment, offer_id in zip(
        blocked[MOMENT].tolist(), blocked["offer_id"].tolist(), strict=True
    ):
        declined.setdefault(customers[moment], set()).add(offer_id)
    return {customer: frozenset(offers) for customer, offers in declined.items()}


def recent_declines_by_invoice(
    events: pd.DataFrame, before: dt.datetime, invoices_cap: int, invoices: pd.DataFrame
) -> dict[str, frozenset[str]]:
    """Per invoice of ``invoices`` (``invoice_id``, ``customer_id``, in the order they are
    decided), the offers the decline cap of ``invoices_cap`` invoices blocks, from
    ``offer_events`` as at ``before`` (see :func:`recent_declines`).

    A customer's invoices of one day are decided one after another, as the API decides them when
    they are sent so: the customer's i-th invoice of the day (from 0) has the i decided before it
    among its latest invoices, none declined yet, so its cap reaches ``invoices_cap − i`` of the
    customer's invoices in ``offer_events``. A decision of one of ``invoices`` already in
    ``offer_events`` (decided earlier by the API) is not one of their earlier invoices. Invoices
    without a blocked offer are left out.
    """
    if "invoice_id" in events:
        events = events[~events["invoice_id"].isin(invoices["invoice_id"])]
    place = invoices.groupby(CUSTOMER_KEY, sort=False).cumcount().to_numpy()
    invoice_ids = invoices["invoice_id"].astype(str).to_numpy()
    customers = invoices[CUSTOMER_KEY].astype(str).to_numpy()
    found: dict[str, frozenset[str]] = {}
    for earlier_today in range(min(int(place.max(initial=-1)) + 1, max(invoices_cap, 0))):
        at = place == earlier_today
        blocked = recent_declines(events, before, invoices_cap - earlier_today, customers[at])
        for invoice_id, customer in zip(invoice_ids[at], customers[at], strict=True):
            offers = blocked.get(customer)
            if offers:
                found[invoice_id] = offers
    return found


def feature_paths(features_dir: Path) -> dict[str, Path]:
    """The Parquet feature table of each customer view a decision reads."""
    return {view: Path(features_dir) / f"{view}.parquet" for view in DECISION_VIEWS}


def check_features(paths: Mapping[str, Path]) -> None:
    """Raise :class:`InvoiceRunError` naming the feature tables that do not exist, or that lack
    columns this release reads (tables an earlier release built)."""
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise InvoiceRunError(
            f"feature tables not found: {', '.join(missing)}; run `offers features build` first"
        )
    from features.materialize import lacking_columns_problem

    for view, path in paths.items():
        problem = lacking_columns_problem(path, DECISION_VIEWS.get(view, ()))
        if problem is not None:
            raise InvoiceRunError(problem)


# --- deciding -------------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def decision_row(decision: Decision, decision_id: str) -> dict[str, Any]:
    """One output row, its JSON exactly as the API's response body (without ``decision_id``)."""
    return answer_row(offers_answer_json(decision, decision_id))


# Where an answer's parts begin and end in its compact JSON. A key's quote right after a comma
# never occurs inside a JSON string (a quote there is written ``\\"``), so the first ``,"offers":[``
# is the answer's own, and no part holds the keys that follow it.
_HEAD_END = ',"experiment":'
_OFFERS_START = ',"offers":'
_SUMMARY_START = ',"usage_summary":'
_SUMMARY_END = ',"degraded":'


# The answer's numbers (pydantic) and ``json.dumps`` differ only below 1e-4: ``0.00001`` and
# ``1.5e-7`` against ``1e-05`` and ``1.5e-07``. A part holding such a number (or text that looks
# like one, as "e-faktura" after a digit would) is written again.
def _written_otherwise(part: str) -> bool:
    if ".0000" in part:
        return True
    at = part.find("e-")
    while at > 0:
        if part[at - 1].isdigit():
            return True
        at = part.find("e-", at + 2)
    return False


def _compact_part(part: str) -> str:
    """``_compact(json.loads(part))`` for a compact part of an answer: the part's own bytes
    unless one of its numbers is written otherwise by ``json.dumps``."""
    if not _written_otherwise(part):
        return part
    return _compact(json.loads(part))


def answer_row(answer_json: str) -> dict[str, Any]:
    """One output row of a POST /v1/offers answer, as answered or replayed from the decision
    log: ``decision`` holds its bytes without ``decision_id`` (the answer's first field);
    ``offers`` and ``usage_summary`` their parts as ``json.dumps`` writes them compactly."""
    head_end = answer_json.find(_HEAD_END)
    offers_start = answer_json.find(_OFFERS_START)
    summary_start = answer_json.find(_SUMMARY_START, offers_start)
    summary_end = answer_json.rfind(_SUMMARY_END)
    if min(head_end, offers_start, summary_start, summary_end) < 0 or not (
        head_end < offers_start < summary_start < summary_end
    ):
        return _parsed_answer_row(answer_json)
    summary = answer_json[summary_start + len(_SUMMARY_START) : summary_end]
    return _row(
        json.loads(answer_json[:head_end] + "}"),
        answer_json,
        offers=_compact_part(answer_json[offers_start + len(_OFFERS_START) : summary_start]),
        usage_summary=None if summary == "null" else _compact_part(summary),
    )


def _parsed_answer_row(answer_json: str) -> dict[str, Any]:
    """:func:`answer_row` by parsing the whole answer."""
    public = json.loads(answer_json)
    summary = public["usage_summary"]
    return _row(
        public,
        answer_json,
        offers=_compact(public["offers"]),
        usage_summary=None if summary is None else _compact(summary),
    )


def _row(
    public: dict[str, Any], answer_json: str, *, offers: str, usage_summary: str | None
) -> dict[str, Any]:
    """The output row from the answer's head fields, its compact parts and the answer itself
    without its leading ``decision_id`` (the row keeps that in its own column)."""
    decision_id = public["decision_id"]
    first_field = f'{{"decision_id":"{decision_id}",'
    if not answer_json.startswith(first_field):
        raise ValueError("an offers answer starts with its decision_id")
    return {
        "invoice_id": public["invoice_id"],
        CUSTOMER_KEY: public[CUSTOMER_KEY],
        "decision_id": decision_id,
        "policy": public["policy"],
        "model_version": public["model_version"],
        "offers": offers,
        "usage_summary": usage_summary,
        "decision": "{" + answer_json[len(first_field) :],
    }


class _AccountsRead:
    """A feature source whose account rows were read already (for the plan fit): each decision
    reads the same row again without a second lookup."""

    def __init__(self, source: FeatureSource, accounts: Mapping[str, dict[str, Any]]) -> None:
        self._source = source
        self._accounts = accounts

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        return self._source.read_consent(customer_id)

    def read_account(self, customer_id: str) -> dict[str, Any]:
        row = self._accounts.get(customer_id)
        return self._source.read_account(customer_id) if row is None else row

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._source.read_account_and_profile(customer_id)


def slice_plan_fits(
    source: FeatureSource, customers: Iterable[str], catalog: Catalog, invoice_date: dt.date
) -> tuple[FeatureSource, PlanFitTable]:
    """A slice's plan fit against the catalog, for all its customers' accounts at once, and the
    source its decisions read: the same, with the account rows read here kept."""
    accounts = {customer: source.read_account(customer) for customer in customers}
    plan_fits = PlanFitTable(
        (usage_as_of(row, invoice_date) for row in accounts.values()), catalog.offers
    )
    return _AccountsRead(source, accounts), plan_fits


@contextmanager
def loaded_objects_left_out_of_collections() -> Iterator[None]:
    """While a slice is decided, the cyclic garbage collector leaves out the objects alive when
    it starts: the slice's feature rows (a dict per customer and view), the models, the catalog.

    Each full collection would otherwise walk them all again; with a slice of 15,630 invoices that
    was 1.5–2.5 s of 12.8–13.2 s of CPU. Freeing by reference counting is unaffected, and the
    objects are handed back to the collector when the slice is done, so a cycle among them is
    still collected then. The API freezes what it loads at start-up likewise (``serving.app``).
    """
    gc.collect()  # what the slice before left in cycles is collected, not frozen with the rest
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def decide_invoices(
    invoices: pd.DataFrame,
    source: FeatureSource,
    catalog: Catalog,
    options: DecisionOptions,
    *,
    scorer: LightGBMScorer | None,
    declined: Mapping[str, frozenset[str]],
) -> Iterator[dict[str, Any]]:
    """Decide each invoice (``invoice_id``, ``customer_id``, ``decision_id``: see
    :func:`~serving.decision_log.ids.billing_run_decision_ids`) as the API would; yield output
    rows.

    ``declined``: per invoice id, the offers the decline cap blocks
    (:func:`recent_declines_by_invoice`).

    An invoice whose customer the features do not know is skipped (the API answers 404).
    The invoices' plan fit against the catalog is worked out first, for all their accounts at
    once (:class:`~serving.decision.candidates.PlanFitTable`); each decision reads its rows.
    They are decided ``DECIDED_TOGETHER`` at a time by the engine's ``decide_many``: one model
    call per step for all of them, each decision the one the API would make alone.
    """
    policy = "model" if scorer is not None else "rules"
    source, plan_fits = slice_plan_fits(
        source, invoices[CUSTOMER_KEY], catalog, options.invoice_date
    )
    pairs = list(zip(invoices["invoice_id"], invoices[CUSTOMER_KEY], strict=True))
    decision_ids = invoices["decision_id"].tolist()
    with loaded_objects_left_out_of_collections():
        for start in range(0, len(pairs), DECIDED_TOGETHER):
            calls = [
                DecisionCall(
                    DecisionRequest(
                        invoice_id=invoice_id,
                        customer_id=customer_id,
                        invoice_date=options.invoice_date,
                        locale=options.locale,
                        max_offers=options.max_offers,
                    ),
                    policy=policy,
                    scorer=scorer,
                    recently_declined=declined.get(invoice_id, frozenset()),
                )
                for invoice_id, customer_id in pairs[start : start + DECIDED_TOGETHER]
            ]
            outcomes = decide_many(
                calls, source, catalog, objective=options.objective, plan_fits=plan_fits
            )
            chunk_ids = decision_ids[start : start + DECIDED_TOGETHER]
            for outcome, decision_id in zip(outcomes, chunk_ids, strict=True):
                if isinstance(outcome, UnknownCustomerError):
                    # No ids in the log: the run's summary counts these invoices (decided vs
                    # invoices).
                    logger.warning("an invoice's customer is not in the features; not decided")
                    continue
                if isinstance(outcome, Exception):
                    raise outcome
                yield decision_row(outcome, decision_id)


# --- output ---------------------------------------------------------------------------------------


@dataclass
class WrittenDecisions:
    """What was written: decisions, their policies and the offers shown."""

    decided: int = 0
    policies: Counter[str] = field(default_factory=Counter)
    offers_shown: int = 0

    def add(self, part: pa.Table) -> None:
        self.decided += part.num_rows
        self.policies.update(part.column("policy").to_pylist())
        self.offers_shown += sum(
            len(json.loads(offers)) for offers in part.column("offers").to_pylist()
        )


def decision_table(rows: pd.DataFrame | pa.Table, day: dt.date) -> pa.Table:
    """Rows of :data:`ROW_COLUMNS` with the run's date, in the output's column order and types."""
    part = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
    columns = {name: part.column(name).cast(OUTPUT_SCHEMA.field(name).type) for name in ROW_COLUMNS}
    columns["invoice_date"] = pa.array([day] * part.num_rows, pa.date32())
    return pa.table([columns[name] for name in OUTPUT_SCHEMA.names], schema=OUTPUT_SCHEMA)


def write_decisions(
    parts: Iterable[pd.DataFrame | pa.Table], day: dt.date, out: Path
) -> WrittenDecisions:
    """Write the decisions, part after part, to a temporary file that then replaces ``out``.

    Parts come ordered by customer and invoice id; memory holds one part at a time.
    """
    written = WrittenDecisions()
    with replacing(Path(out)) as (temporary,), pq.ParquetWriter(temporary, OUTPUT_SCHEMA) as writer:
        for rows in parts:
            part = decision_table(rows, day)
            if part.num_rows:
                writer.write_table(part)
                written.add(part)
    return written
