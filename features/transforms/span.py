"""The span of the input tables: where the monthly snapshots of the feature tables start and end."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from core.calendar import month_index, month_start
from features.transforms.dates import days_of


def data_start(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp | None:
    """The first day of the month of the oldest usage, invoice or offer shown; None without any.

    Monthly snapshots start there: before it nothing happened that a model could learn from, and
    the snapshot on that day already holds the contract and profile as they were then.
    """
    candidates = [
        days_of(frame[column]).min()
        for name, column in (
            ("usage_monthly", "month"),
            ("invoices", "invoice_date"),
            ("offer_events", "shown_at"),
        )
        if (frame := tables.get(name)) is not None and len(frame)
    ]
    if not candidates:
        return None
    oldest = min(candidates)
    return pd.Timestamp(month_start(month_index(np.array([oldest])))[0], tz="UTC")


def data_end(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp:
    """The moment the newest usage month became known: the first day of the following month.

    Monthly snapshots run up to it. Without usage, the month after the newest date of any table.
    """
    usage = tables.get("usage_monthly")
    if usage is not None and len(usage):
        newest = days_of(usage["month"]).max()
    else:
        candidates = [
            days_of(frame[column]).max()
            for name, column in (
                ("contracts", "valid_from"),
                ("invoices", "invoice_date"),
                ("customers", "signup_date"),
            )
            if (frame := tables.get(name)) is not None and len(frame)
        ]
        if not candidates:
            raise ValueError("no dated rows in the input tables: nothing to build features from")
        newest = max(candidates)
    return pd.Timestamp(month_start(month_index(np.array([newest])) + 1)[0], tz="UTC")
