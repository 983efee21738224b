"""Benchmark: `offers simulate` for 200,000 customers × 24 months (20,000 with --quick).

The command runs in a child process, so its wall time and peak resident memory are its own
(``os.wait4`` returns the child's resource usage). The budget is 2 minutes and 4 GiB. For
comparison, the same usage and invoice generation written as a plain per-customer pandas loop is
timed on a small sample and extrapolated to the same number of customers.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks.runner import (
    REPOSITORY,
    WORLD_END_MONTH,
    WORLD_MONTHS,
    WORLD_SEED,
    run_child,
    simulate_command,
    world_customers,
    write_result,
)
from core.catalog import Offer, load_catalog
from core.contract import SURVEY_RESPONSES, TABLES
from core.plan_fit import monthly_overage_sek

log = logging.getLogger(__name__)

END_MONTH = WORLD_END_MONTH
BUDGET_SECONDS = 120.0
BUDGET_MIB = 4 * 1024
LOOP_SAMPLE_CUSTOMERS = 300


def _simulate_in_child(customers: int, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `offers simulate` run as a child process."""
    return run_child(simulate_command(customers, out))


def _row_counts(out: Path) -> dict[str, int]:
    return {
        table.name: pq.ParquetFile(out / table.file_name).metadata.num_rows
        for table in (*TABLES, SURVEY_RESPONSES)
    }


def _allowance(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _one_customer(
    rng: np.random.Generator, plan: Offer, months: pd.DatetimeIndex
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Usage and invoices of one customer, month by month, the straightforward way."""
    log_data = np.log(4.5) + rng.normal(0.0, 1.05)
    growth = rng.normal(0.012, 0.01)
    log_voice = np.log(120.0) + rng.normal(0.0, 0.9)
    sms_rate = np.exp(rng.normal(np.log(10.0), 1.0))
    travel = rng.beta(1.2, 9.0)
    paper = rng.random() < 0.2
    risk = rng.uniform(0.0, 0.05)
    billing_day = int(rng.choice([1, 10, 20]))
    rows = []
    for month in months:
        days = 0
        if rng.random() < travel:
            days = min(int(rng.geometric(0.2)), month.days_in_month)
        rows.append(
            {
                "month": month,
                "data_gb": round(float(np.exp(log_data + rng.normal(-0.045, 0.3))), 2),
                "voice_minutes": round(float(np.exp(log_voice + rng.normal(-0.03, 0.25))), 1),
                "sms": int(rng.poisson(sms_rate)),
                "roaming_days": days,
                "roaming_data_gb": round(days * float(np.exp(log_data)) / 30 * 0.7, 2),
            }
        )
        log_data += growth + rng.normal(0.0, 0.05)
    usage = pd.DataFrame(rows)
    usage["overage_sek"] = monthly_overage_sek(
        usage["data_gb"],
        usage["voice_minutes"],
        usage["roaming_data_gb"],
        _allowance(plan.data_gb),
        _allowance(plan.voice_minutes),
        _allowance(plan.roaming_data_gb),
    )
    invoices = []
    for month, overage in zip(
        usage["month"].iloc[:-1], usage["overage_sek"].iloc[:-1], strict=True
    ):
        invoice_date = (month + pd.offsets.MonthBegin(1)) + pd.Timedelta(days=billing_day - 1)
        due = invoice_date + pd.Timedelta(days=30)
        late = rng.random() < risk
        paid = due + pd.Timedelta(days=int(rng.exponential(12))) if late else due
        fee = 29.0 if paper else 0.0
        invoices.append(
            {
                "invoice_date": invoice_date,
                "due_date": due,
                "amount_sek": round(plan.monthly_fee_sek + overage + fee, 2),
                "invoice_fee_sek": fee,
                "paid_date": paid,
            }
        )
    return usage, pd.DataFrame(invoices)


def _per_customer_loop(customers: int) -> float:
    """Seconds a per-customer pandas loop takes for ``customers`` customers."""
    catalog = load_catalog(REPOSITORY / "catalog" / "offers.yaml")
    day = dt.date.fromisoformat(END_MONTH + "-01")
    plans = [plan for plan in catalog.plans if plan.is_valid_on(day)]
    months = pd.date_range(end=pd.Timestamp(day), periods=WORLD_MONTHS, freq="MS")
    rng = np.random.default_rng(WORLD_SEED)
    started = time.perf_counter()
    usage, invoices = [], []
    for _ in range(customers):
        one_usage, one_invoices = _one_customer(rng, plans[int(rng.integers(len(plans)))], months)
        usage.append(one_usage)
        invoices.append(one_invoices)
    pd.concat(usage, ignore_index=True)
    pd.concat(invoices, ignore_index=True)
    return time.perf_counter() - started


def run(quick: bool = False) -> dict[str, Any]:
    """Time `offers simulate` and the per-customer loop; write benchmarks/results/simulate.json."""
    customers = world_customers(quick)
    with tempfile.TemporaryDirectory(prefix="offers-bench-simulate-") as folder:
        out = Path(folder) / "raw"
        seconds, peak_mib = _simulate_in_child(customers, out)
        rows = _row_counts(out)
    loop_seconds = _per_customer_loop(LOOP_SAMPLE_CUSTOMERS)
    loop_extrapolated = loop_seconds / LOOP_SAMPLE_CUSTOMERS * customers
    figures: dict[str, Any] = {
        "command": (
            f"offers simulate --customers {customers} --months {WORLD_MONTHS} --seed {WORLD_SEED} "
            f"--end-month {END_MONTH} --out <temporary folder>"
        ),
        "quick": quick,
        "customers": customers,
        "months": WORLD_MONTHS,
        "wall_seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "budget": {"wall_seconds": BUDGET_SECONDS, "peak_rss_mib": BUDGET_MIB},
        "within_budget": seconds < BUDGET_SECONDS and peak_mib < BUDGET_MIB,
        "rows": rows,
        "rows_per_second": round(sum(rows.values()) / seconds),
        "per_customer_pandas_loop": {
            "what": "usage and invoices only, one customer at a time",
            "sample_customers": LOOP_SAMPLE_CUSTOMERS,
            "sample_seconds": round(loop_seconds, 2),
            "extrapolated_seconds": round(loop_extrapolated, 1),
        },
        "speedup_over_loop": round(loop_extrapolated / seconds, 1),
    }
    path = write_result("simulate", figures)
    log.info(
        "simulate %s customers × %s months: %.1f s, peak %.0f MiB (loop would take %.0f s); %s",
        customers,
        WORLD_MONTHS,
        seconds,
        peak_mib,
        loop_extrapolated,
        path,
    )
    return figures
