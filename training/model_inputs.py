"""The models' input columns and how a feature frame becomes a model matrix.

Training and serving both build model inputs here, so a served score sees exactly what training saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
    OFFER_ATTRIBUTES,
    PLAN_FIT,
    USAGE_HISTORY_ONLY,
)


def _numeric(view: Mapping[str, str]) -> list[str]:
    return [name for name, kind in view.items() if kind in {"float", "int"}]


# Customer columns both models read. Region and plan identifiers are left out on purpose: fees and
# allowances carry what matters, and a decision must never hinge on where someone lives.
CUSTOMER_FEATURES: list[str] = [
    *(name for name in _numeric(CUSTOMER_USAGE) if name not in USAGE_HISTORY_ONLY),
    *_numeric(CUSTOMER_CONTRACT),
    *_numeric(CUSTOMER_BILLING),
    *_numeric(CUSTOMER_PROFILE),
    "segment_is_business",
]
OFFER_FEATURES: list[str] = [
    *_numeric(OFFER_ATTRIBUTES),
    *PLAN_FIT,
    "offer_new_customer_discount_sek",
]
# Where the offer stood on the invoice it was logged on (1 = first). Fewer customers read down to
# the second and third offer, so a logged offer's outcome depends on its place as much as on the
# offer; without this input the model learns the logging policy's order as if it were the
# customers' taste. Training reads the logged rank; every prediction (serving, evaluation) asks
# "if shown first", position 1.
SHOWN_POSITION = "shown_position"
SERVED_POSITION = 1.0

RANKER_FEATURES: list[str] = [*CUSTOMER_FEATURES, *OFFER_FEATURES, SHOWN_POSITION]
CHURN_FEATURES: list[str] = list(CUSTOMER_FEATURES)


def new_customer_discount_sek(fee: np.ndarray, new_customer_fee: np.ndarray) -> np.ndarray:
    """How much less a new customer pays for the offer today; 0 when there is no such price."""
    return np.clip(fee - np.where(np.isnan(new_customer_fee), fee, new_customer_fee), 0.0, None)


def add_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns computed from features rather than stored: encodings and price gaps."""
    derived = frame.copy()
    if "segment" in derived:
        derived["segment_is_business"] = (derived["segment"] == "business").astype(float)
    if "offer_monthly_fee_sek" in derived:
        derived["offer_new_customer_discount_sek"] = new_customer_discount_sek(
            derived["offer_monthly_fee_sek"].astype(float).to_numpy(),
            derived["offer_new_customer_fee_sek"].astype(float).to_numpy(),
        )
    derived[SHOWN_POSITION] = (
        derived["rank"].astype(float) if "rank" in derived else SERVED_POSITION
    )
    return derived


def model_matrix(
    frame: pd.DataFrame, columns: list[str], dtype: type[np.floating] = np.float64
) -> np.ndarray:
    """A matrix in ``columns`` order; missing values stay NaN (LightGBM handles them).

    Columns are copied one at a time into the result, so a frame of millions of rows is not
    duplicated on the way (``float32`` halves the memory of training sets).
    """
    derived_names = {"segment_is_business", "offer_new_customer_discount_sek", SHOWN_POSITION}
    needs_derived = any(name in derived_names and name not in frame for name in columns)
    source = add_derived_columns(frame[_derived_inputs(frame)]) if needs_derived else frame
    missing = [name for name in columns if name not in source and name not in frame]
    if missing:
        raise KeyError(f"feature frame lacks model inputs: {missing}")
    matrix = np.empty((len(frame), len(columns)), dtype=dtype)
    for position, name in enumerate(columns):
        column = source[name] if name in source else frame[name]
        matrix[:, position] = pd.to_numeric(column, errors="coerce").to_numpy(
            dtype=float, na_value=np.nan
        )
    return matrix


def _derived_inputs(frame: pd.DataFrame) -> list[str]:
    inputs = ["segment", "offer_monthly_fee_sek", "offer_new_customer_fee_sek", "rank"]
    return [name for name in inputs if name in frame]


def ranker_matrix(frame: pd.DataFrame, dtype: type[np.floating] = np.float64) -> np.ndarray:
    return model_matrix(frame, RANKER_FEATURES, dtype)


def churn_matrix(frame: pd.DataFrame, dtype: type[np.floating] = np.float64) -> np.ndarray:
    return model_matrix(frame, CHURN_FEATURES, dtype)


# Input monitoring -------------------------------------------------------------------------------
# The customer inputs both models read, as the decision log keeps a copy of them for each model
# decision and as the input profile of a training window describes them (training.drift). Age
# and the survey's satisfaction answer are personal data: they are kept in bands, never as
# values, in the log as in the profile.
AGE_BAND = "age_band"
SATISFACTION_BAND = "satisfaction_band"
# Lower bound of each age band (customers under 18 are never profiled, so never scored).
AGE_BANDS: tuple[tuple[int, str], ...] = ((18, "18-29"), (30, "30-44"), (45, "45-64"), (65, "65+"))
SATISFACTION_BANDS: dict[int, str] = {1: "low", 2: "low", 3: "neutral", 4: "high", 5: "high"}
UNANSWERED = "unanswered"
BANDED_INPUTS: dict[str, str] = {"age": AGE_BAND, "satisfaction": SATISFACTION_BAND}
MONITORED_NUMERIC: list[str] = [name for name in CUSTOMER_FEATURES if name not in BANDED_INPUTS]
MONITORED_CATEGORICAL: list[str] = list(BANDED_INPUTS.values())
MONITORED_INPUTS: list[str] = [*MONITORED_NUMERIC, *MONITORED_CATEGORICAL]
_NUMERIC_POSITIONS = [CUSTOMER_FEATURES.index(name) for name in MONITORED_NUMERIC]
_AGE_POSITION = CUSTOMER_FEATURES.index("age")
_SATISFACTION_POSITION = CUSTOMER_FEATURES.index("satisfaction")
# Four decimals keep a value's bin (bin edges come from the same values) at a third of the size.
_LOGGED_DECIMALS = 4


def age_band(age: float) -> str | None:
    """The band an age falls in; None when unknown."""
    if math.isnan(age):
        return None
    band = None
    for lower, name in AGE_BANDS:
        if age >= lower:
            band = name
    return band


def satisfaction_band(answer: float) -> str:
    """``low`` (1–2), ``neutral`` (3), ``high`` (4–5), or ``unanswered``."""
    if math.isnan(answer):
        return UNANSWERED
    return SATISFACTION_BANDS.get(round(answer), UNANSWERED)


def monitored_inputs(customer_row: np.ndarray) -> dict[str, float | str | None]:
    """The compact copy of one decision's customer inputs the decision log keeps.

    ``customer_row`` holds ``CUSTOMER_FEATURES`` in order, as the model read them (a ranker
    matrix row starts with them). Numbers are rounded, missing ones are None, and age and
    satisfaction appear only as bands.
    """
    if len(customer_row) != len(CUSTOMER_FEATURES):
        raise ValueError(f"{len(CUSTOMER_FEATURES)} customer inputs expected, {len(customer_row)}")
    numbers = np.round(customer_row[_NUMERIC_POSITIONS], _LOGGED_DECIMALS).tolist()
    kept: dict[str, float | str | None] = {
        name: None if value != value else value  # NaN is the one value unequal to itself
        for name, value in zip(MONITORED_NUMERIC, numbers, strict=True)
    }
    kept[AGE_BAND] = age_band(float(customer_row[_AGE_POSITION]))
    kept[SATISFACTION_BAND] = satisfaction_band(float(customer_row[_SATISFACTION_POSITION]))
    return kept


def model_may_score(frame: pd.DataFrame) -> pd.Series:
    """Rows of customers the consent gate lets the model score (docs/architecture.md, step 1):
    marketing and profiling granted, no objection, an adult. Only their decisions log inputs,
    so only they belong in the training profile the logged inputs are compared with; a frame
    without the consent columns keeps every row."""
    allowed = pd.Series(True, index=frame.index)
    for flag, wanted in (
        ("consent_marketing", 1),
        ("consent_profiling", 1),
        ("objected_marketing", 0),
    ):
        if flag in frame:
            allowed &= pd.to_numeric(frame[flag], errors="coerce").fillna(0) == wanted
    if "age" in frame:
        allowed &= pd.to_numeric(frame["age"], errors="coerce") >= AGE_BANDS[0][0]
    return allowed


def monitored_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``MONITORED_INPUTS`` of a training frame, one row per row, banded as the log bands them."""
    numeric = np.round(model_matrix(frame, MONITORED_NUMERIC), _LOGGED_DECIMALS)
    result = pd.DataFrame(numeric, columns=MONITORED_NUMERIC, index=frame.index)
    ages = pd.to_numeric(frame["age"], errors="coerce").astype(float)
    answers = pd.to_numeric(frame["satisfaction"], errors="coerce").astype(float)
    result[AGE_BAND] = [age_band(value) for value in ages.tolist()]
    result[SATISFACTION_BAND] = [satisfaction_band(value) for value in answers.tolist()]
    return result
