"""``offers bench invoice-run-million``: ``offers bench invoice-run`` on a world whose busiest
billing date holds more than a million invoices (2.6 million customers × 3 months), so the
million-invoice target is measured rather than extrapolated. 35–55 minutes on two cores, so
never part of a plain ``offers bench``; ``--quick`` runs the quick world through the same path."""

from __future__ import annotations

from typing import Any

from benchmarks.invoice_run import run_million


def run(quick: bool) -> dict[str, Any]:
    return run_million(quick)
