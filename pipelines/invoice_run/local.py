"""The invoice run's local engine: a slice's feature rows in memory, its invoices decided here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pandas as pd

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from pipelines.frame_source import decision_source
from pipelines.invoice_run.core import (
    ORDER,
    ROW_COLUMNS,
    ChampionModels,
    DecisionOptions,
    decide_invoices,
)
from pipelines.invoice_run.slices import SliceOutcome


class LocalSlices:
    """Decides slice after slice in this process with the champion alone, nothing logged.

    ``declined``: per invoice id, what the decline cap blocks (``recent_declines_by_invoice``)."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        catalog: Catalog,
        options: DecisionOptions,
        models: ChampionModels,
        declined: Mapping[str, frozenset[str]],
    ) -> None:
        self.paths = paths
        self.catalog = catalog
        self.options = options
        self.declined = declined
        self.scorer = models.scorer()

    def decide(self, invoices: pd.DataFrame, as_of: dt.datetime) -> SliceOutcome:
        """One slice's output rows, by customer and invoice id."""
        options = replace(self.options, features_as_of=as_of)
        source = decision_source(
            self.paths, as_of, invoices[CUSTOMER_KEY], options.invoice_date, options.consent_changes
        )
        rows = list(
            decide_invoices(
                invoices,
                source,
                self.catalog,
                options,
                scorer=self.scorer,
                declined=self.declined,
            )
        )
        frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
        return SliceOutcome(frame.sort_values(ORDER, kind="stable").reset_index(drop=True))
