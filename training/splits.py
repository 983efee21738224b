"""The time split of a training set: train, tune and validation periods, without leakage.

Validation is the newest months; the tune set (early stopping, model choice, calibration) the
months before it; training the months before that. A row whose label is only known after the next
period has begun is dropped (purged), so nothing that happens in the validation period (not even
an outcome of an earlier offer) reaches training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pandas as pd

PERIOD = "period"
SplitPeriod = Literal["train", "tune", "validation", "purged"]
TRAIN: Final = "train"
TUNE: Final = "tune"
VALIDATION: Final = "validation"
PURGED: Final = "purged"


@dataclass(frozen=True)
class TimeSplit:
    """Period boundaries (UTC, start inclusive) and how long after its time a row's label is known.

    The tune set belongs to the training period: it only has to end before validation does.
    """

    train_start: pd.Timestamp
    tune_start: pd.Timestamp
    validation_start: pd.Timestamp
    validation_end: pd.Timestamp
    label_horizon: pd.DateOffset | pd.Timedelta

    def assign(self, times: pd.Series) -> pd.Series:
        """The period of each row by its time; rows whose label is known only after validation
        has begun are purged."""
        label_known = times + self.label_horizon
        before_validation = (times < self.validation_start) & (label_known <= self.validation_start)
        period = np.select(
            [
                (times >= self.validation_start) & (times < self.validation_end),
                before_validation & (times >= self.tune_start),
                before_validation & (times >= self.train_start),
            ],
            [VALIDATION, TUNE, TRAIN],
            default=PURGED,
        )
        return pd.Series(period, index=times.index, name=PERIOD)

    def window(self) -> dict[str, str]:
        """The windows as tags: where training data starts and ends, and what was validated on."""
        return {
            "train_window": f"{self.train_start.date()}..{self.validation_start.date()}",
            "tune_window": f"{self.tune_start.date()}..{self.validation_start.date()}",
            "validation_window": f"{self.validation_start.date()}..{self.validation_end.date()}",
            "label_horizon": str(self.label_horizon),
        }


def _month_start(times: pd.Series) -> pd.Series:
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.dt.to_period("M").dt.to_timestamp().dt.tz_localize("UTC")


def month_split(
    times: pd.Series,
    label_horizon: pd.DateOffset | pd.Timedelta,
    validation_months: int = 2,
    tune_months: int = 1,
    last_month: pd.Timestamp | None = None,
) -> TimeSplit:
    """Validation = the newest ``validation_months`` calendar months (up to ``last_month``);
    tune = the ``tune_months`` before the last moment whose labels are known before validation;
    training = everything older."""
    if validation_months < 1 or tune_months < 1:
        raise ValueError("validation_months and tune_months must be at least 1")
    months = _month_start(times)
    newest = last_month if last_month is not None else months.max()
    validation_start = newest - pd.DateOffset(months=validation_months - 1)
    validation_end = newest + pd.DateOffset(months=1)
    tune_end = validation_start - label_horizon
    tune_start = tune_end - pd.DateOffset(months=tune_months)
    train_start = months.min()
    if tune_start <= train_start:
        raise ValueError(
            f"too few months for a time split: rows from {train_start.date()} to "
            f"{validation_end.date()}, with {validation_months} validation and {tune_months} "
            f"tune months and labels known {label_horizon} later, nothing is left to train on"
        )
    return TimeSplit(train_start, tune_start, validation_start, validation_end, label_horizon)
