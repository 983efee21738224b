"""Training sets: labelled rows split by time, joined with their features as of each row's time.

The rows and labels come from :mod:`training.labels`, the periods from :mod:`training.splits`
(purged rows are dropped) and the features from :mod:`training.point_in_time`:

- offer-ranker: shown offers with features as of ``shown_at`` from ``offer_ranker_v1``;
- churn-risk: customer-months with features as of the month start from ``churn_v1``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.settings import Settings, get_settings
from features.views import CHURN_SERVICE, RANKER_SERVICE
from training.labels import (
    CHURN_HORIZON_MONTHS,
    RANKER_LABEL_DAYS,
    load_churn_rows,
    load_ranker_rows,
)
from training.point_in_time import join_features
from training.splits import PERIOD, PURGED, TRAIN, SplitPeriod, TimeSplit, month_split

log = logging.getLogger(__name__)


def sample_groups(
    frame: pd.DataFrame, group_column: str, max_rows: int | None, seed: int
) -> pd.DataFrame:
    """Whole groups (decisions or customers) at random until about ``max_rows`` rows.

    Sampling whole groups keeps both the label rate (so probabilities stay calibrated) and the
    decision structure LambdaRank needs; the order of rows is kept.
    """
    if max_rows is None or len(frame) <= max_rows:
        return frame
    codes, uniques = pd.factorize(frame[group_column])
    share = max_rows / len(frame)
    rng = np.random.default_rng(seed)
    keep_group = rng.random(len(uniques)) < share
    return frame[keep_group[codes]]


def fingerprint(paths: Sequence[Path], extra: str = "") -> str:
    """A short content hash of input files (and any extra text, e.g. the training settings)."""
    digest = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class TrainingSet:
    """Labelled rows with features and periods for one model."""

    name: str
    frame: pd.DataFrame
    split: TimeSplit
    feature_service: str
    group_column: str
    timings: dict[str, float] = field(default_factory=dict)

    def period(self, which: SplitPeriod) -> pd.DataFrame:
        return self.frame[self.frame[PERIOD] == which]

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame[PERIOD].value_counts().items()}


def timed(timings: dict[str, float], name: str) -> Any:
    """Context manager adding the elapsed seconds of a block to ``timings[name]``."""

    class _Timer:
        def __enter__(self) -> None:
            self.start = time.perf_counter()

        def __exit__(self, *args: object) -> None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.start
            log.info("%s took %.1f s", name, timings[name])

    return _Timer()


def _sample_training_period(
    rows: pd.DataFrame, group: str, max_train_rows: int | None, seed: int
) -> pd.DataFrame:
    """Keep tune and validation rows whole; sample whole groups of the training period."""
    train = rows[PERIOD].to_numpy() == TRAIN
    sampled = sample_groups(rows[train], group, max_train_rows, seed)
    keep = ~train
    keep[sampled.index.to_numpy()] = True
    return rows[keep].reset_index(drop=True)


def _training_set(
    name: str,
    rows: pd.DataFrame,
    split: TimeSplit,
    group: str,
    service: str,
    settings: Settings,
    method: str,
    timings: dict[str, float],
    step: str,
    max_train_rows: int | None,
    seed: int,
) -> TrainingSet:
    """Label rows split by time (purged rows dropped, the training period sampled by ``group``),
    joined with their features as of each row's timestamp."""
    with timed(timings, f"{step}_labels"):
        rows[PERIOD] = split.assign(rows[EVENT_TIMESTAMP]).to_numpy()
        rows = rows[rows[PERIOD] != PURGED].reset_index(drop=True)
        rows = _sample_training_period(rows, group, max_train_rows, seed)
    with timed(timings, f"{step}_join"):
        frame = join_features(rows, service, settings, method)
    return TrainingSet(name, frame, split, service, group, timings)


def ranker_split(
    shown_at: pd.Series, validation_months: int = 2, tune_months: int = 1
) -> TimeSplit:
    """The ranker's time split of rows shown at ``shown_at``: its label is known
    ``RANKER_LABEL_DAYS`` after the offer was shown."""
    return month_split(
        shown_at,
        pd.Timedelta(days=RANKER_LABEL_DAYS),
        validation_months=validation_months,
        tune_months=tune_months,
    )


def ranker_training_set(
    data_dir: Path,
    settings: Settings | None = None,
    validation_months: int = 2,
    tune_months: int = 1,
    method: str = "tables",
    timings: dict[str, float] | None = None,
    max_train_rows: int | None = None,
    seed: int = 7,
) -> TrainingSet:
    """Shown offers with features as of ``shown_at``, split by time.

    At most about ``max_train_rows`` training rows (whole decisions) are kept, before the join.
    """
    resolved = settings or get_settings()
    timings = timings if timings is not None else {}
    with timed(timings, "ranker_labels"):
        rows = load_ranker_rows(data_dir)
        split = ranker_split(rows[EVENT_TIMESTAMP], validation_months, tune_months)
    return _training_set(
        "offer-ranker",
        rows,
        split,
        "decision_id",
        RANKER_SERVICE,
        resolved,
        method,
        timings,
        "ranker",
        max_train_rows,
        seed,
    )


def churn_training_set(
    data_dir: Path,
    settings: Settings | None = None,
    validation_months: int = 2,
    tune_months: int = 1,
    method: str = "tables",
    timings: dict[str, float] | None = None,
    max_train_rows: int | None = None,
    seed: int = 7,
) -> TrainingSet:
    """Customer-months with features as of the month start, split by time.

    At most about ``max_train_rows`` training rows (whole customers) are kept, before the join.
    """
    resolved = settings or get_settings()
    timings = timings if timings is not None else {}
    with timed(timings, "churn_labels"):
        rows, newest = load_churn_rows(data_dir)
        split = month_split(
            rows[EVENT_TIMESTAMP],
            pd.DateOffset(months=CHURN_HORIZON_MONTHS),
            validation_months=validation_months,
            tune_months=tune_months,
            last_month=newest,
        )
    return _training_set(
        "churn-risk",
        rows,
        split,
        CUSTOMER_KEY,
        CHURN_SERVICE,
        resolved,
        method,
        timings,
        "churn",
        max_train_rows,
        seed,
    )
