"""What the cumulative results over time add to an experiment report (``GET /v1/experiments/{key}/
report``), on one SQLite decision log, in the same run:

- before: the decisions grouped per customer (the query as it was before the series), revenue and
  objections, the statistics;
- now: one read grouped per customer and invoice date, summed per customer in Python, and the
  statistics at the end of every period besides (``Experiments.report``).

The log is written directly in bulk: ``CUSTOMERS`` enrolled customers over two variants, each
with one to five decisions on invoice dates spread over 13 weeks, two offers shown per decision
with an impression, a click on a third of them and an accept on a fifth.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from benchmarks.runner import write_result
from core.columns import CUSTOMER_KEY
from serving.decision_log import DecisionLog
from serving.decision_log.experiments import _accepted_revenue, _objections, customer_days
from serving.decision_log.records import ExperimentSpec, Variant
from serving.experiments import Experiments, build_report, cumulative_results, decided_first_by

log = logging.getLogger(__name__)

CUSTOMERS = 100_000
QUICK_CUSTOMERS = 10_000
KEY = "bench-report"
START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
DAYS = 91
REPEATS = 3


def _fill(log_: DecisionLog, customers: int, seed: int = 0) -> int:
    """Write the decisions, offers and events; returns the number of decisions."""
    rng = np.random.default_rng(seed)
    tables = log_.tables
    counts = rng.integers(1, 6, customers)
    decisions, offers, events = [], [], []
    number = 0
    for customer, count in enumerate(counts):
        variant = "treatment" if customer % 2 else "control"
        for day in rng.integers(0, DAYS, count):
            decision_id = f"d{number:09d}"
            moment = START + dt.timedelta(days=int(day))
            decisions.append(
                {
                    "decision_id": decision_id,
                    "invoice_id": f"i{number:09d}",
                    "customer_id": f"C{customer:07d}",
                    "invoice_date": moment.date(),
                    "created_at": moment,
                    "policy": "model",
                    "experiment_key": KEY,
                    "experiment_variant": variant,
                    "consent": {"marketing": True},
                    "response": "{}",
                    "log": {},
                }
            )
            for rank, offer in ((1, "PLAN_A"), (2, "PLAN_B")):
                offers.append(
                    {"decision_id": decision_id, "offer_id": offer, "rank": rank, "propensity": 0.9}
                )
            draw = rng.random()
            kinds = ["impression"] + (["click"] if draw < 0.33 else [])
            kinds += ["accept"] if draw < 0.2 else []
            for kind in kinds:
                events.append(
                    {
                        "event_id": f"{kind[0]}{number:09d}",
                        "decision_id": decision_id,
                        "offer_id": "PLAN_A",
                        "type": kind,
                        "occurred_at": moment,
                        "received_at": moment,
                    }
                )
            number += 1
    with log_.engine.begin() as connection:
        for table, rows in (
            (tables.decisions, decisions),
            (tables.decision_offers, offers),
            (tables.events, events),
        ):
            for start in range(0, len(rows), 50_000):
                connection.execute(table.insert(), rows[start : start + 50_000])
    return number


def _per_customer_before(log_: DecisionLog) -> int:
    """The report's read as it was before the series: grouped per customer only."""
    tables = log_.tables
    decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
    shown = (
        sa.select(offers.c.decision_id, sa.func.count().label("shown"))
        .group_by(offers.c.decision_id)
        .subquery()
    )
    answered = (
        sa.select(
            events.c.decision_id,
            sa.func.sum(sa.case((events.c.type == "impression", 1), else_=0)).label("seen"),
            sa.func.max(sa.case((events.c.type == "click", 1), else_=0)).label("clicked"),
            sa.func.max(sa.case((events.c.type == "accept", 1), else_=0)).label("accepted"),
        )
        .group_by(events.c.decision_id)
        .subquery()
    )
    query = (
        sa.select(
            decisions.c.experiment_variant,
            decisions.c[CUSTOMER_KEY],
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(shown.c.shown), 0),
            sa.func.coalesce(sa.func.sum(answered.c.seen), 0),
            sa.func.coalesce(sa.func.sum(answered.c.clicked), 0),
            sa.func.coalesce(sa.func.sum(answered.c.accepted), 0),
            sa.func.min(decisions.c.created_at),
        )
        .select_from(
            decisions.outerjoin(shown, shown.c.decision_id == decisions.c.decision_id).outerjoin(
                answered, answered.c.decision_id == decisions.c.decision_id
            )
        )
        .where(decisions.c.experiment_key == KEY)
        .group_by(decisions.c.experiment_variant, decisions.c[CUSTOMER_KEY])
    )
    with log_.engine.connect() as connection:
        rows = connection.execute(query).all()
        _accepted_revenue(log_, connection, KEY)
        _objections(log_, connection, KEY)
    return len(rows)


def _best(action: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(REPEATS):
        began = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - began)
    return min(times), result


def run(quick: bool = False) -> dict[str, Any]:
    customers = QUICK_CUSTOMERS if quick else CUSTOMERS
    with tempfile.TemporaryDirectory(prefix="offers-bench-report-") as folder:
        decision_log = DecisionLog(f"sqlite:///{Path(folder) / 'offers.db'}")
        try:
            experiments = Experiments(decision_log, now=lambda: START + dt.timedelta(days=DAYS))
            experiment = experiments.create(
                ExperimentSpec(
                    key=KEY,
                    description="",
                    variants=(
                        Variant("treatment", 0.5, "model"),
                        Variant("control", 0.5, "rules"),
                    ),
                    start=START,
                    end=START + dt.timedelta(days=DAYS),
                )
            )
            began = time.perf_counter()
            decisions = _fill(decision_log, customers)
            log.info("experiment report: %d decisions written", decisions)
            written = time.perf_counter() - began
            now = START + dt.timedelta(days=DAYS)
            others = decided_first_by(experiment, experiments.all())

            before_read_s, _ = _best(lambda: _per_customer_before(decision_log))
            read_s, days = _best(lambda: customer_days(decision_log, KEY))
            outcomes = experiments.outcomes(KEY)
            statistics_s, _ = _best(
                lambda: build_report(experiment, outcomes, now=now, decided_first=others)
            )
            names = [variant.name for variant in experiment.variants]
            series_s, series = _best(lambda: cumulative_results(names, "treatment", days))
            full_s, report = _best(lambda: experiments.report(KEY))
        finally:
            decision_log.close()
    figures = {
        "customers": customers,
        "decisions": decisions,
        "customer_days": len(days),
        "period": series.period,
        "points_per_variant": len(series.series[0].points),
        "write_s": round(written, 2),
        "read_per_customer_before_s": round(before_read_s, 3),
        "read_per_customer_and_date_s": round(read_s, 3),
        "statistics_without_series_s": round(statistics_s, 3),
        "series_statistics_s": round(series_s, 3),
        "report_before_s": round(before_read_s + statistics_s, 3),
        "report_with_series_s": round(full_s, 3),
        "ratio_with_to_before": round(full_s / (before_read_s + statistics_s), 2),
        "report_customers": report.customers,
        "repeats": REPEATS,
        "note": "best of the repeats; no contracts table, so no churn is read",
    }
    write_result("experiment-report", figures)
    return figures
