"""The batch invoice run: offers for every invoice of one billing date, decided as the API decides.

``offers invoice-run --invoice-date D --out FILE [--engine local|spark]``:

1. the input tables are checked against CONTRACT §1 (nothing is written when they break it);
2. the invoices dated D are read from ``invoices``, and each customer's recently declined offers
   from ``offer_events`` (the frequency cap: declines in their last
   ``OFFERS_DECLINE_CAP_INVOICES`` decisions shown before D);
3. the champion models are loaded once (none registered: rules decide);
4. every invoice is decided by :func:`serving.decision.engine.decide`, the API's own decision,
   over the feature tables as of 00:00 UTC on D (what an online store materialised up to that
   moment holds), locally or in Spark partitions;
5. one row per decided invoice is written to a Parquet file, by customer and invoice id,
   atomically (a temporary file, then renamed).

Experiments are not applied: a batch decision is the champion's (or the rules'). The decision id
is derived from the invoice id, so a rerun gives the same ids.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.catalog import Catalog, load_catalog
from core.contract import INVOICES, OFFER_EVENTS
from core.files import replacing
from core.settings import Settings, get_settings
from core.tables import read_table
from core.validation import require_valid
from pipelines.frame_source import (
    DECISION_VIEWS,
    FrameFeatureSource,
    read_decision_frames,
    start_of_day,
)
from serving.decision.engine import Decision, decide
from serving.decision.inputs import DecisionRequest, FeatureSource, Locale, UnknownCustomerError
from serving.offers_response import OffersResponse
from serving.scoring_model import LightGBMScorer, ModelMismatch
from training.registry import CHURN_MODEL, RANKER_MODEL, LoadedModel, load_champion

if TYPE_CHECKING:
    from rich.text import Text

logger = logging.getLogger(__name__)

# Decision ids of batch decisions: uuid5 of the invoice id in this namespace.
DECISION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "invoice-offers/invoice-run")
DECLINED = "declined"

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("invoice_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
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


class InvoiceRunError(ValueError):
    """The run cannot start: no feature tables, or a champion this code cannot serve."""


@dataclass(frozen=True)
class DecisionOptions:
    """What every decision of one run shares."""

    invoice_date: dt.date
    locale: Locale = "sv"
    max_offers: int = 3

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

    @property
    def unknown_customers(self) -> int:
        """Invoices whose customer the features have never seen (the API answers 404)."""
        return self.invoices - self.decided

    @property
    def decisions_per_second(self) -> float:
        """Decisions per second of the deciding step (feature reads included, Spark start too)."""
        return self.decided / self.decide_seconds if self.decide_seconds > 0 else 0.0

    def __str__(self) -> str:
        policies = ", ".join(f"{name} {count:,}" for name, count in sorted(self.policies.items()))
        model = self.model_version or "none (rules decide)"
        lines = [
            f"invoice run {self.invoice_date.isoformat()} ({self.engine}): {self.decided:,} of "
            f"{self.invoices:,} invoices decided in {self.seconds:.1f} s -> {self.out}",
            f"  deciding took {self.decide_seconds:.1f} s "
            f"({self.decisions_per_second:,.0f} decisions/s)",
            f"  policies: {policies or 'none'}; offers shown: {self.offers_shown:,}",
            f"  model: {model}; experiments are not applied in invoice runs",
        ]
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


# --- inputs ---------------------------------------------------------------------------------------


def invoices_of_day(data_dir: Path, day: dt.date) -> pd.DataFrame:
    """``invoice_id`` and ``customer_id`` of the invoices dated ``day``, by invoice id."""
    invoices = read_table(data_dir, INVOICES)
    dated = invoices.loc[
        invoices["invoice_date"] == pd.Timestamp(day), ["invoice_id", "customer_id"]
    ]
    return dated.sort_values("invoice_id", kind="stable").reset_index(drop=True)


def recent_declines(
    events: pd.DataFrame,
    before: dt.datetime,
    invoices: int,
    customer_ids: Iterable[str] | None = None,
) -> dict[str, frozenset[str]]:
    """Per customer, the offers declined in their last ``invoices`` decisions before ``before``.

    The decisions are those of ``offer_events`` shown before ``before``; a decline counts once
    it was recorded by then (or has no time). Customers without such declines are left out.
    """
    if invoices <= 0 or events.empty:
        return {}
    moment = pd.Timestamp(before)
    frame = events
    if customer_ids is not None:
        frame = frame[frame["customer_id"].isin(set(customer_ids))]
    frame = frame[frame["shown_at"] < moment]
    if frame.empty:
        return {}
    decisions = (
        frame.groupby(["customer_id", "decision_id"], sort=False)["shown_at"].max().reset_index()
    )
    decisions = decisions.sort_values(["customer_id", "shown_at", "decision_id"], kind="stable")
    latest = set(decisions.groupby("customer_id", sort=False).tail(invoices)["decision_id"])
    declined = frame[
        (frame["outcome"] == DECLINED)
        & frame["decision_id"].isin(latest)
        & (frame["outcome_at"].isna() | (frame["outcome_at"] <= moment))
    ]
    return {
        str(customer): frozenset(offers)
        for customer, offers in declined.groupby("customer_id")["offer_id"]
    }


def feature_paths(features_dir: Path) -> dict[str, Path]:
    """The Parquet feature table of each customer view a decision reads."""
    return {view: Path(features_dir) / f"{view}.parquet" for view in DECISION_VIEWS}


def _check_features(paths: Mapping[str, Path]) -> None:
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise InvoiceRunError(
            f"feature tables not found: {', '.join(missing)}; run `offers features build` first"
        )


# --- deciding -------------------------------------------------------------------------------------


def decision_id_for(invoice_id: str) -> str:
    """The same invoice always gets the same decision id."""
    return str(uuid.uuid5(DECISION_NAMESPACE, invoice_id))


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def decision_row(decision: Decision) -> dict[str, Any]:
    """One output row, its JSON exactly as the API's response body (without ``decision_id``)."""
    decision_id = decision_id_for(decision.invoice_id)
    response = OffersResponse.for_decision(decision, decision_id)
    body = response.model_dump_json(exclude={"decision_id"})
    public = json.loads(body)
    summary = public["usage_summary"]
    return {
        "invoice_id": decision.invoice_id,
        "customer_id": decision.customer_id,
        "decision_id": decision_id,
        "policy": decision.policy,
        "model_version": decision.model_version,
        "offers": _compact(public["offers"]),
        "usage_summary": None if summary is None else _compact(summary),
        "decision": body,
    }


def decide_invoices(
    invoices: pd.DataFrame,
    source: FeatureSource,
    catalog: Catalog,
    options: DecisionOptions,
    *,
    scorer: LightGBMScorer | None,
    declined: Mapping[str, frozenset[str]],
) -> Iterator[dict[str, Any]]:
    """Decide each invoice (``invoice_id``, ``customer_id``) as the API would; yield output rows.

    An invoice whose customer the features do not know is skipped (the API answers 404).
    """
    policy = "model" if scorer is not None else "rules"
    for invoice_id, customer_id in zip(
        invoices["invoice_id"], invoices["customer_id"], strict=True
    ):
        request = DecisionRequest(
            invoice_id=invoice_id,
            customer_id=customer_id,
            invoice_date=options.invoice_date,
            locale=options.locale,
            max_offers=options.max_offers,
        )
        try:
            decision = decide(
                request,
                source,
                catalog,
                policy=policy,
                scorer=scorer,
                recently_declined=declined.get(customer_id, frozenset()),
            )
        except UnknownCustomerError:
            logger.warning("invoice %s: customer %s not in the features", invoice_id, customer_id)
            continue
        yield decision_row(decision)


def decide_locally(
    invoices: pd.DataFrame,
    paths: Mapping[str, Path],
    catalog: Catalog,
    options: DecisionOptions,
    models: ChampionModels,
    declined: Mapping[str, frozenset[str]],
) -> pd.DataFrame:
    """The local engine: the day's feature rows in memory, one decision after another."""
    as_of = start_of_day(options.invoice_date)
    frames = read_decision_frames(paths, as_of, invoices["customer_id"])
    source = FrameFeatureSource.from_frames(frames, as_of)
    scorer = models.scorer()
    rows = list(
        decide_invoices(invoices, source, catalog, options, scorer=scorer, declined=declined)
    )
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return frame.sort_values(ORDER, kind="stable").reset_index(drop=True)


# --- output ---------------------------------------------------------------------------------------


ORDER = ["customer_id", "invoice_id"]


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


# --- the run --------------------------------------------------------------------------------------


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
) -> InvoiceRunSummary:
    """Decide the offers of every invoice dated ``invoice_date`` and write them to ``out``.

    ``models`` defaults to the registry's champions. Raises ``ContractError`` (invalid input
    tables), ``CatalogError`` or :class:`InvoiceRunError` (no feature tables), all
    ``ValueError``, before anything is written.
    """
    if engine not in ("local", "spark"):
        raise ValueError(f"engine must be local or spark, not {engine!r}")
    started = time.perf_counter()
    resolved = settings or get_settings()
    data = Path(data_dir or resolved.data_dir)
    catalog = load_catalog(resolved.catalog)
    require_valid(data, catalog)
    paths = feature_paths(Path(features_dir or resolved.features_dir))
    _check_features(paths)
    options = DecisionOptions(invoice_date=invoice_date, locale=locale, max_offers=max_offers)
    as_of = start_of_day(invoice_date)

    invoices = invoices_of_day(data, invoice_date)
    events = read_table(data, OFFER_EVENTS)
    declined = recent_declines(
        events, as_of, resolved.decline_cap_invoices, invoices["customer_id"]
    )
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
    if engine == "spark":
        from pipelines.invoice_run_spark import decide_with_spark

        written = decide_with_spark(
            invoices, paths, catalog, options, champions, declined, resolved, out=out
        )
    else:
        rows = decide_locally(invoices, paths, catalog, options, champions, declined)
        written = write_decisions([rows], invoice_date, out)
    decided = time.perf_counter()
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
        warnings=_warnings(paths, as_of) if len(invoices) else (),
    )
    for warning in summary.warnings:
        logger.warning("invoice run %s: %s", invoice_date, warning)
    logger.info("%s", summary)
    return summary


__all__ = [
    "ChampionModels",
    "DecisionOptions",
    "InvoiceRunError",
    "InvoiceRunSummary",
    "decide_invoices",
    "decision_id_for",
    "recent_declines",
    "run_invoice_run",
]
