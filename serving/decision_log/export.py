"""The logged offers and their outcomes as offer_events, the table the next retraining reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.columns import CUSTOMER_KEY
from core.contract import OFFER_EVENTS
from core.files import replacing
from core.settings import get_settings
from serving.decision_log.repository import DecisionLog
from training.labels import RANKER_LABEL_DAYS

# The strongest event decides an offer's outcome in offer_events; no event or only an impression:
# ignored.
_OUTCOME_BY_EVENT = {"accept": "accepted", "decline": "declined", "click": "clicked"}
_EVENT_STRENGTH = {"impression": 0, "click": 1, "decline": 2, "accept": 3}


# How long a shown offer's outcome stays open: training labels an offer accepted when it was
# accepted within this window, so before it has passed, "not accepted" is not known yet.
OUTCOME_WINDOW = dt.timedelta(days=RANKER_LABEL_DAYS)


class Export(NamedTuple):
    exported: int
    # Shown offers left for a later export: their decision's outcome window is still open.
    waiting: int


def offer_events(log: DecisionLog, known_by: dt.datetime | None = None) -> pa.Table:
    """Every logged offer with its outcome, in the offer_events contract schema.

    With ``known_by``, only the decisions made at least ``OUTCOME_WINDOW`` before it, each with
    all its offers: an offer shown an hour ago and not answered yet would reach training as not
    accepted, and exporting the accepted ones early would leave the newest days with accepted
    offers alone (a decision's offers split across exports, its acceptance overstated).
    """
    return _offer_events(log, known_by)[0]


def _offer_events(log: DecisionLog, known_by: dt.datetime | None) -> tuple[pa.Table, int]:
    tables = log.tables
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    shown = sa.select(
        decisions.c.decision_id,
        decisions.c.invoice_id,
        decisions.c.customer_id,
        offers.c.offer_id,
        decisions.c.created_at,
        offers.c.rank,
        decisions.c.policy,
        offers.c.propensity,
    ).select_from(decisions.join(offers, offers.c.decision_id == decisions.c.decision_id))
    happened = sa.select(
        events.c.decision_id, events.c.offer_id, events.c.type, events.c.occurred_at
    )
    with log.engine.connect() as connection:
        shown_rows = connection.execute(shown).all()
        event_rows = connection.execute(happened).all()
    strongest: dict[tuple[str, str], tuple[int, dt.datetime, str]] = {}
    for decision_id, offer_id, kind, occurred_at in event_rows:
        strength = _EVENT_STRENGTH.get(kind, 0)
        key = (decision_id, offer_id)
        best = strongest.get(key)
        # The strongest event wins; between equals, the first time it happened.
        if best is None or (strength, -occurred_at.timestamp()) > (
            best[0],
            -best[1].timestamp(),
        ):
            strongest[key] = (strength, occurred_at, kind)
    columns: dict[str, list[Any]] = {name: [] for name in OFFER_EVENTS.column_names}
    waiting = 0
    for (
        decision_id,
        invoice_id,
        customer_id,
        offer_id,
        created_at,
        rank,
        policy,
        p,
    ) in shown_rows:
        best = strongest.get((decision_id, offer_id))
        outcome = _OUTCOME_BY_EVENT.get(best[2], "ignored") if best else "ignored"
        if known_by is not None and created_at + OUTCOME_WINDOW > known_by:
            waiting += 1
            continue
        columns["decision_id"].append(decision_id)
        columns["invoice_id"].append(invoice_id)
        columns[CUSTOMER_KEY].append(customer_id)
        columns["offer_id"].append(offer_id)
        columns["shown_at"].append(created_at)
        columns["rank"].append(rank)
        columns["policy"].append(policy)
        columns["propensity"].append(p)
        columns["outcome"].append(outcome)
        # An outcome comes after its offer was shown (the data contract). The API takes events
        # stamped up to a few minutes before their decision (clocks differ), and logs written
        # before it checked may hold earlier ones: such an outcome counts at the decision's time.
        columns["outcome_at"].append(
            max(best[1], created_at) if best and outcome != "ignored" else None
        )
    return pa.Table.from_pydict(columns, schema=OFFER_EVENTS.arrow_schema()), waiting


def merge_into_offer_events(log: DecisionLog, out: Path, now: dt.datetime | None = None) -> Export:
    """Merge the logged decisions whose outcomes are known ``now`` (made at least
    ``OUTCOME_WINDOW`` before) into the offer_events file at ``out``; return the rows exported
    and the shown offers left for a later export.

    Rows already in the file stay, except those the log has again (same decision_id and
    offer_id), which take the log's newer outcome. The file is replaced in one rename, so a
    failure leaves the old file as it was. Nothing is written when there is nothing to export
    and no file yet.
    """
    fresh, waiting = _offer_events(log, now or dt.datetime.now(dt.UTC))
    if fresh.num_rows == 0 and not out.exists():
        return Export(0, waiting)
    merged = _merged_with_file(out, fresh) if out.exists() else fresh
    _write_atomically(merged, out)
    return Export(fresh.num_rows, waiting)


def _row_keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(
        table["decision_id"].cast(pa.string()), table["offer_id"].cast(pa.string()), "\x1f"
    )


def _merged_with_file(path: Path, fresh: pa.Table) -> pa.Table:
    existing = pq.read_table(path)
    missing = [name for name in OFFER_EVENTS.column_names if name not in existing.column_names]
    if missing:
        raise ValueError(f"{path}: offer_events lacks the columns {', '.join(missing)}")
    contract = OFFER_EVENTS.arrow_schema()
    # Keep the contract's types, and any extra columns a user added, as they were.
    for field in contract:
        index = existing.schema.get_field_index(field.name)
        existing = existing.set_column(index, field, existing[field.name].cast(field.type))
    kept = existing.filter(pc.invert(pc.is_in(_row_keys(existing), value_set=_row_keys(fresh))))
    merged = pa.concat_tables([kept, fresh], promote_options="default")
    ordered = [*OFFER_EVENTS.column_names]
    ordered += [name for name in merged.column_names if name not in ordered]
    return merged.select(ordered)


def _write_atomically(table: pa.Table, out: Path) -> None:
    with replacing(out, durable=True) as (temporary,):
        pq.write_table(table, temporary)


def export_offer_events(out: Path | None = None) -> Export:
    """Append the logged decisions and their outcomes to offer_events (``offers events export``)."""
    settings = get_settings()
    target = out or settings.data_dir / OFFER_EVENTS.file_name
    log = DecisionLog.from_settings(settings)
    try:
        return merge_into_offer_events(log, target)
    finally:
        log.close()
