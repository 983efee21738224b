"""The invoice run's local engine: the day's feature rows in memory, one decision after another."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from pipelines.frame_source import FrameFeatureSource, read_decision_frames
from pipelines.invoice_run.core import (
    ORDER,
    ROW_COLUMNS,
    ChampionModels,
    DecisionOptions,
    decide_invoices,
)


def decide_locally(
    invoices: pd.DataFrame,
    paths: Mapping[str, Path],
    catalog: Catalog,
    options: DecisionOptions,
    models: ChampionModels,
    declined: Mapping[str, frozenset[str]],
) -> pd.DataFrame:
    """Decide the day's invoices in this process; the output rows by customer and invoice id."""
    as_of = options.features_moment
    frames = read_decision_frames(
        paths, as_of, invoices[CUSTOMER_KEY], options.invoice_date, options.consent_changes
    )
    source = FrameFeatureSource.from_frames(frames, as_of)
    scorer = models.scorer()
    rows = list(
        decide_invoices(invoices, source, catalog, options, scorer=scorer, declined=declined)
    )
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return frame.sort_values(ORDER, kind="stable").reset_index(drop=True)
