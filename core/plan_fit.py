"""Plan fit: what a customer would have paid on a candidate offer for the usage they actually had.

Pure and vectorised. The same function feeds Feast's on-demand view, training, serving, the usage
summary and the simulator's own billing, so a saving shown on an invoice is the one the model saw.
A decision for one customer prices its few offers with ``plan_fit_rows``, the same arithmetic on
floats, equal to the arrays' numbers to the last bit (tests/core/test_plan_fit.py).
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

FIT_MONTHS = 3
MONTHS = range(1, FIT_MONTHS + 1)


@dataclass(frozen=True)
class Tariff:
    """Out-of-allowance prices of the operator, in SEK."""

    data_sek_per_gb: float = 29.0
    voice_sek_per_minute: float = 0.59
    roaming_sek_per_gb: float = 39.0


TARIFF = Tariff()


def overage_sek(
    used: np.ndarray | pd.Series | float,
    allowance: np.ndarray | pd.Series | float,
    price_per_unit: np.ndarray | float,
) -> np.ndarray:
    """Charge for usage above an allowance; a NaN allowance means unlimited (no charge)."""
    used_arr = np.asarray(used, dtype=float)
    allowance_arr = np.asarray(allowance, dtype=float)
    excess = np.where(np.isnan(allowance_arr), 0.0, np.clip(used_arr - allowance_arr, 0.0, None))
    return np.round(excess * price_per_unit, 2)


def monthly_overage_sek(
    data_gb: np.ndarray | pd.Series | float,
    voice_minutes: np.ndarray | pd.Series | float,
    roaming_data_gb: np.ndarray | pd.Series | float,
    allowance_data_gb: np.ndarray | pd.Series | float,
    allowance_voice_minutes: np.ndarray | pd.Series | float,
    allowance_roaming_gb: np.ndarray | pd.Series | float,
    tariff: Tariff = TARIFF,
) -> np.ndarray:
    """The month's total overage for data, voice and roaming data."""
    return np.round(
        overage_sek(data_gb, allowance_data_gb, tariff.data_sek_per_gb)
        + overage_sek(voice_minutes, allowance_voice_minutes, tariff.voice_sek_per_minute)
        + overage_sek(roaming_data_gb, allowance_roaming_gb, tariff.roaming_sek_per_gb),
        2,
    )


# Columns the plan-fit function reads. Usage is per month, m1 the newest; NaN allowance = unlimited.
USAGE_INPUTS = tuple(
    f"{measure}_m{month}"
    for measure in ("data_gb", "voice_minutes", "roaming_data_gb")
    for month in range(1, FIT_MONTHS + 1)
)
CONTRACT_INPUTS = (
    "current_monthly_fee_sek",
    "current_data_gb",
    "current_voice_minutes",
    "current_roaming_data_gb",
    "current_new_customer_fee_sek",
)
OFFER_INPUTS = (
    "offer_kind_code",
    "offer_monthly_fee_sek",
    "offer_data_gb",
    "offer_voice_minutes",
    "offer_roaming_data_gb",
)
PLAN_FIT_OUTPUTS = (
    "fit_current_cost_sek_per_month",
    "fit_offer_cost_sek_per_month",
    "fit_saving_sek_per_month",
    "fit_offer_overage_sek_per_month",
    "fit_current_overage_sek_per_month",
    "fit_data_allowance_used",
)

# Offer kinds as numbers, because Feast's on-demand inputs travel best as numbers.
OFFER_KIND_CODES = {"plan": 0, "addon": 1, "loyalty": 2, "payment_help": 3}


def offer_identity_code(offer_id: str) -> int:
    """A stable number per offer id, so a model can tell apart offers whose attributes are the
    same (the payment-help offers all cost nothing and add no allowance, yet customers answer
    them very differently). Below 2**24, so float32 training matrices hold it exactly."""
    return zlib.crc32(offer_id.encode()) % 16_777_213


PLAN_FIT_INPUTS = (*USAGE_INPUTS, *CONTRACT_INPUTS, *OFFER_INPUTS)

Columns = Mapping[str, np.ndarray]


def _allowance(
    columns: Columns, measure: str, is_plan: np.ndarray, is_addon: np.ndarray
) -> np.ndarray:
    """The allowance on the offer: a plan's own, the current one plus an add-on's, else current.

    NaN is unlimited throughout: unlimited plus anything stays unlimited, and an add-on with an
    unlimited allowance makes the measure unlimited.
    """
    current = columns[f"current_{measure}"]
    offered = columns[f"offer_{measure}"]
    return np.where(is_plan, offered, np.where(is_addon, current + offered, current))


def plan_fit_arrays(columns: Columns, tariff: Tariff = TARIFF) -> dict[str, np.ndarray]:
    """Plan fit on float arrays named by ``PLAN_FIT_INPUTS``; returns ``PLAN_FIT_OUTPUTS`` arrays.

    The numpy core of :func:`plan_fit`, for the request path where building a DataFrame would
    cost more than the arithmetic. Same numbers, same rules.
    """
    kind = columns["offer_kind_code"]
    is_plan = kind == OFFER_KIND_CODES["plan"]
    is_addon = kind == OFFER_KIND_CODES["addon"]
    is_loyalty = kind == OFFER_KIND_CODES["loyalty"]

    current_fee = columns["current_monthly_fee_sek"]
    offer_monthly = columns["offer_monthly_fee_sek"]
    new_customer_fee = columns["current_new_customer_fee_sek"]
    offer_fee = np.where(
        is_plan,
        offer_monthly,
        np.where(
            is_addon,
            current_fee + offer_monthly,
            np.where(
                is_loyalty,
                np.fmin(
                    current_fee, np.where(np.isnan(new_customer_fee), current_fee, new_customer_fee)
                ),
                current_fee,
            ),
        ),
    )
    measures = ("data_gb", "voice_minutes", "roaming_data_gb")
    offer_allowance = {m: _allowance(columns, m, is_plan, is_addon) for m in measures}
    current_allowance = {m: columns[f"current_{m}"] for m in measures}

    # The three months at once: arrays of months × rows, each month worked out on its own and
    # then added up in order, newest first, as a bill would be.
    def month_block(measure: str) -> np.ndarray:
        return np.stack(
            [np.asarray(columns[f"{measure}_m{month}"], dtype=float) for month in MONTHS]
        )

    data_raw = month_block("data_gb")
    known = ~np.isnan(data_raw)
    data = np.where(known, data_raw, 0.0)
    voice = np.nan_to_num(month_block("voice_minutes"))
    roaming = np.nan_to_num(month_block("roaming_data_gb"))
    # The offer's allowances and today's, stacked: one pass prices both, as 2 × months × rows.
    both = {m: np.stack([offer_allowance[m], current_allowance[m]])[:, None, :] for m in measures}
    offer_overage, current_overage = np.where(
        known,
        monthly_overage_sek(
            data,
            voice,
            roaming,
            both["data_gb"],
            both["voice_minutes"],
            both["roaming_data_gb"],
            tariff,
        ),
        0.0,
    ).sum(axis=1)
    allowance = offer_allowance["data_gb"]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(np.isnan(allowance) | ~(allowance > 0), 0.0, data / allowance)
    data_share = np.where(known, share, 0.0).sum(axis=0)
    known_months = known.sum(axis=0).astype(float)
    months = np.maximum(known_months, 1.0)
    offer_overage = offer_overage / months
    current_overage = current_overage / months
    current_cost = current_fee + current_overage
    offer_cost = offer_fee + offer_overage
    return {
        "fit_current_cost_sek_per_month": np.round(current_cost, 2),
        "fit_offer_cost_sek_per_month": np.round(offer_cost, 2),
        "fit_saving_sek_per_month": np.round(current_cost - offer_cost, 2),
        "fit_offer_overage_sek_per_month": np.round(offer_overage, 2),
        "fit_current_overage_sek_per_month": np.round(current_overage, 2),
        "fit_data_allowance_used": np.round(data_share / months, 4),
    }


def plan_fit(frame: pd.DataFrame, tariff: Tariff = TARIFF) -> pd.DataFrame:
    """Plan fit per row of (customer features, offer features); returns the output columns.

    Costs are monthly means over the last three months of actual usage; a month without usage
    (a customer younger than three months) is left out of the mean rather than counted as zero.
    A plan replaces the current plan; an add-on adds its allowance and fee to the current plan; a
    loyalty offer keeps the plan at the new-customer price; payment help does not change the usage
    cost. ``fit_data_allowance_used`` is the mean share of the data allowance used (0 when
    unlimited).
    """
    columns = {
        name: pd.to_numeric(frame[name], errors="coerce").astype(float).to_numpy()
        for name in PLAN_FIT_INPUTS
    }
    return pd.DataFrame(plan_fit_arrays(columns, tariff), index=frame.index)


# --- one customer in plain Python ------------------------------------------------------------
# A decision prices a handful of offers for one customer; numpy's cost per call, some eighty
# calls in ``plan_fit_arrays``, is then most of the work. The same arithmetic on floats, in the
# same order, gives the same numbers to the last bit (tested against ``plan_fit_arrays``).

_MAX_FLOAT = sys.float_info.max


def round_as_numpy(value: float, scale: float) -> float:
    """``np.round(value, decimals)`` for one float, ``scale`` being ``10.0 ** decimals``: numpy
    multiplies, rounds half to even and divides back, which ``round(value, decimals)`` does not."""
    scaled = value * scale
    if math.isfinite(scaled):
        scaled = math.copysign(float(round(scaled)), scaled)
    return scaled / scale


def _excess(used: float, allowance: float) -> float:
    """``np.clip(used - allowance, 0.0, None)``, NaN allowance (unlimited) as no excess."""
    if allowance != allowance:
        return 0.0
    over = used - allowance
    return over if over > 0.0 or over != over else 0.0


def overage_row(used: float, allowance: float, price_per_unit: float) -> float:
    """:func:`overage_sek` for one measure of one month, in plain Python: the same number."""
    return round_as_numpy(_excess(used, allowance) * price_per_unit, 100.0)


def _as_number(value: float) -> float:
    """``np.nan_to_num`` for one float."""
    if value != value:
        return 0.0
    if value == math.inf:
        return _MAX_FLOAT
    if value == -math.inf:
        return -_MAX_FLOAT
    return value


def plan_fit_rows(
    customer: Sequence[float], offers: Sequence[Sequence[float]], tariff: Tariff = TARIFF
) -> list[tuple[float, ...]]:
    """:func:`plan_fit_arrays` for one customer against each offer, in plain Python.

    ``customer``: the floats of ``(*USAGE_INPUTS, *CONTRACT_INPUTS)`` in that order; each offer
    the floats of ``OFFER_INPUTS``. Returns one tuple of ``PLAN_FIT_OUTPUTS`` per offer.
    """
    data_raw = customer[0:FIT_MONTHS]
    voice = [_as_number(v) for v in customer[FIT_MONTHS : 2 * FIT_MONTHS]]
    roaming = [_as_number(v) for v in customer[2 * FIT_MONTHS : 3 * FIT_MONTHS]]
    (
        current_fee,
        current_data,
        current_voice,
        current_roaming,
        new_customer_fee,
    ) = customer[3 * FIT_MONTHS : 3 * FIT_MONTHS + len(CONTRACT_INPUTS)]
    known = [value == value for value in data_raw]
    data = [value if seen else 0.0 for value, seen in zip(data_raw, known, strict=True)]
    months = max(float(sum(known)), 1.0)
    data_price = tariff.data_sek_per_gb
    voice_price = tariff.voice_sek_per_minute
    roaming_price = tariff.roaming_sek_per_gb

    def overage(allowance_data: float, allowance_voice: float, allowance_roaming: float) -> float:
        # Month by month, newest first, added to 0.0 as numpy's sum adds (so -0.0 sums to 0.0);
        # a month without usage counts nothing.
        total = 0.0
        for month in range(FIT_MONTHS):
            charge = (
                round_as_numpy(
                    overage_row(data[month], allowance_data, data_price)
                    + overage_row(voice[month], allowance_voice, voice_price)
                    + overage_row(roaming[month], allowance_roaming, roaming_price),
                    100.0,
                )
                if known[month]
                else 0.0
            )
            total += charge
        return total / months

    current_allowances = (current_data, current_voice, current_roaming)
    current_overage = overage(*current_allowances)
    current_cost = current_fee + current_overage
    rows: list[tuple[float, ...]] = []
    for kind, offer_monthly, offer_data, offer_voice, offer_roaming in offers:
        if kind == OFFER_KIND_CODES["plan"]:
            offer_fee = offer_monthly
            allowances = (offer_data, offer_voice, offer_roaming)
            offer_overage = overage(*allowances)
        elif kind == OFFER_KIND_CODES["addon"]:
            offer_fee = current_fee + offer_monthly
            allowances = (
                current_data + offer_data,
                current_voice + offer_voice,
                current_roaming + offer_roaming,
            )
            offer_overage = overage(*allowances)
        else:  # today's allowances: today's overage, worked out once above
            allowances = current_allowances
            offer_overage = current_overage
            if kind == OFFER_KIND_CODES["loyalty"]:
                other = current_fee if new_customer_fee != new_customer_fee else new_customer_fee
                offer_fee = float(np.fmin(current_fee, other))
            else:
                offer_fee = current_fee
        allowance = allowances[0]
        share_total = 0.0
        for month in range(FIT_MONTHS):
            share = (
                data[month] / allowance
                if known[month] and allowance == allowance and allowance > 0
                else 0.0
            )
            share_total += share
        offer_cost = offer_fee + offer_overage
        rows.append(
            (
                round_as_numpy(current_cost, 100.0),
                round_as_numpy(offer_cost, 100.0),
                round_as_numpy(current_cost - offer_cost, 100.0),
                round_as_numpy(offer_overage, 100.0),
                round_as_numpy(current_overage, 100.0),
                round_as_numpy(share_total / months, 10000.0),
            )
        )
    return rows
