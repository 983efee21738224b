"""Which invoices the API benchmark's load sends: every customer billed in the world's newest
billing month, once, with that invoice's own date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from benchmarks.api import billed_customers, newest_month_invoices


def _world(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [
        ("C1", dt.date(2026, 10, 20)),  # an older month: not drawn
        ("C1", dt.date(2026, 11, 20)),
        ("C2", dt.date(2026, 11, 1)),
        ("C3", dt.date(2026, 11, 10)),
        ("C3", dt.date(2026, 11, 1)),  # billed twice in the month: its later invoice
        ("C4", dt.date(2026, 9, 1)),  # left before the newest month
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "invoice_date"])
    frame.to_parquet(raw / "invoices.parquet")
    return tmp_path


def test_the_load_draws_each_customer_billed_in_the_newest_month_once_with_its_date(
    tmp_path: Path,
) -> None:
    work = _world(tmp_path)
    invoices = newest_month_invoices(work)
    assert sorted(invoices) == [("C1", "2026-11-20"), ("C2", "2026-11-01"), ("C3", "2026-11-10")]
    assert newest_month_invoices(work) == invoices  # the same order every time
    assert billed_customers(work, limit=2) == [customer for customer, _ in invoices[:2]]


def test_the_servers_cpu_time_is_read_from_proc_as_the_process_counts_it() -> None:
    """Each step of the benchmark reports the server's CPU time per decision from /proc."""
    import os
    import time

    from benchmarks.api import _cpu_seconds

    read_before, counted_before = _cpu_seconds(os.getpid()), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        sum(range(1000))
    read = _cpu_seconds(os.getpid()) - read_before
    counted = time.process_time() - counted_before
    assert counted >= 0.3
    # /proc counts in clock ticks (10 ms here); the process's other threads add next to nothing.
    assert abs(read - counted) < 0.05


def test_the_servers_disk_faults_are_read_from_proc_as_the_process_counts_them() -> None:
    """Each step also reports how many page faults a decision waited on the disk for: the same
    counter the kernel gives the process itself."""
    import os
    import resource

    from benchmarks.api import _major_faults

    before = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    read = _major_faults(os.getpid())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    assert before <= read <= after
    assert isinstance(read, int)
