"""Writing a billing run's decisions to a SQLite decision log: ids in the run's order against
hashed ids, in the same run.

Each way writes ``DECISIONS`` decisions into a fresh log through ``DecisionLog.record_many``, the
invoice run's write, ``INVOICES_PER_WRITE`` to a transaction, with the log's own background
checkpoints. The two ways alternate in rounds of ``BLOCK`` decisions, each into its own log, so
the machine's drift falls on both alike; every round's time is kept, since the difference grows
with the log.

- hashed: a uuid5 of the invoice id (the invoice run's ids before, and the straightforward way);
- run order: :func:`serving.decision_log.ids.billing_run_decision_ids`.

The records are made before the clock starts. Their sizes are a model decision's: three offers,
an answer of 1.4 kB, twelve candidates in the log (0.8 kB) and forty model inputs (0.7 kB).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.runner import write_result
from core.settings import Settings
from pipelines.invoice_run.logged import INVOICES_PER_WRITE, LOG_CALL_DEADLINE_SECONDS
from serving.decision_log import DecisionLog, DecisionRecord, LoggedOffer
from serving.decision_log.ids import DECISION_NAMESPACE, billing_run_decision_ids

log = logging.getLogger(__name__)

DECISIONS = 1_020_000
QUICK_DECISIONS = 120_000
BLOCK = 60_000
DAY = dt.date(2026, 11, 20)
OFFERS = ("PLAN_15GB", "ADDON_DATA_10GB", "PAY_EINVOICE")
WORK = Path("benchmarks/.work/log-writes")


def _records(first: int, count: int, ids: list[str]) -> list[tuple[DecisionRecord, None]]:
    made = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
    reason = "Med Mobil 15 GB hade du betalat 76 kr mindre per månad de senaste tre månaderna. "
    records = []
    for number in range(first, first + count):
        invoice_id = f"INV-2026-11-{number:09d}"
        offers = [
            {"offer_id": offer, "rank": rank + 1, "reasons": [reason * 2], "price_sek": 199.0}
            for rank, offer in enumerate(OFFERS)
        ]
        answer = {
            "decision_id": ids[number - first],
            "invoice_id": invoice_id,
            "offers": offers,
            "usage_summary": {"text": reason * 6, "period": ["2026-10-01", "2026-10-31"]},
        }
        records.append(
            (
                DecisionRecord(
                    decision_id=ids[number - first],
                    invoice_id=invoice_id,
                    customer_id=f"C{number:09d}",
                    invoice_date=DAY,
                    created_at=made,
                    policy="model",
                    model_version="offer-ranker/3",
                    experiment_key=None,
                    experiment_variant=None,
                    degraded=None,
                    consent={"marketing": True, "profiling": True},
                    response_json=json.dumps(answer, ensure_ascii=False),
                    log={
                        "churn_risk": 0.04,
                        "candidates": [
                            {"offer_id": f"OFFER_{n}", "acceptance": 0.05, "blocked": []}
                            for n in range(12)
                        ],
                    },
                    offers=tuple(
                        LoggedOffer(offer, rank + 1, 1.0, 0.3, 0.1)
                        for rank, offer in enumerate(OFFERS)
                    ),
                    model_inputs={f"input_{n}": 0.5 + n for n in range(40)},
                ),
                None,
            )
        )
    return records


def _ids(way: str, decisions: int) -> list[str]:
    """Every invoice's decision id, the invoices in the run's order."""
    invoice_ids = [f"INV-2026-11-{number:09d}" for number in range(decisions)]
    if way == "hashed":
        return [str(uuid.uuid5(DECISION_NAMESPACE, invoice_id)) for invoice_id in invoice_ids]
    return billing_run_decision_ids(DAY, invoice_ids)


def _round(decision_log: DecisionLog, ids: list[str], first: int, count: int) -> float:
    """Seconds to write ``count`` decisions from number ``first`` on, records made beforehand."""
    seconds = 0.0
    for start in range(first, first + count, INVOICES_PER_WRITE):
        size = min(INVOICES_PER_WRITE, first + count - start)
        records = _records(start, size, ids[start : start + size])
        began = time.perf_counter()
        decision_log.record_many(records)
        seconds += time.perf_counter() - began
    return seconds


def run(quick: bool = False) -> dict[str, Any]:
    decisions = QUICK_DECISIONS if quick else DECISIONS
    shutil.rmtree(WORK, ignore_errors=True)
    logs = {}
    ids = {way: _ids(way, decisions) for way in ("hashed", "run_order")}
    for way in ids:
        settings = Settings(database_url=f"sqlite:///{(WORK / way / 'offers.db').resolve()}")
        logs[way] = DecisionLog.from_settings(settings, deadline_s=LOG_CALL_DEADLINE_SECONDS)
    rounds: dict[str, list[float]] = {way: [] for way in logs}
    try:
        for first in range(0, decisions, BLOCK):
            count = min(BLOCK, decisions - first)
            # Which way goes first alternates, so neither always follows the other's checkpoint.
            order = list(logs) if (first // BLOCK) % 2 == 0 else list(reversed(logs))
            for way in order:
                rounds[way].append(_round(logs[way], ids[way], first, count))
            log.info(
                "log writes: %d decisions, µs a decision hashed %.1f, run order %.1f",
                first + count,
                1e6 * rounds["hashed"][-1] / count,
                1e6 * rounds["run_order"][-1] / count,
            )
    finally:
        for decision_log in logs.values():
            decision_log.close()
    sizes = {way: (WORK / way / "offers.db").stat().st_size for way in logs}
    shutil.rmtree(WORK, ignore_errors=True)
    per_round = {
        way: [
            round(1e6 * seconds / min(BLOCK, decisions - BLOCK * index), 1)
            for index, seconds in enumerate(seconds_by_round)
        ]
        for way, seconds_by_round in rounds.items()
    }
    totals = {way: sum(seconds) for way, seconds in rounds.items()}
    figures = {
        "quick": quick,
        "decisions": decisions,
        "decisions_per_transaction": INVOICES_PER_WRITE,
        "round_decisions": BLOCK,
        "seconds": {way: round(seconds, 2) for way, seconds in totals.items()},
        "microseconds_per_decision_by_round": per_round,
        "hashed_over_run_order": round(totals["hashed"] / totals["run_order"], 2),
        "database_bytes": sizes,
    }
    write_result("log_writes_quick" if quick else "log_writes", figures)
    return figures
