"""Plan fit: what a customer would have paid on a candidate offer for the usage they actually had.

Pure and vectorised. The same function feeds Feast's on-demand view, training, serving, the usage
summary and the simulator's own billing, so a saving shown on an invoice is the one the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FIT_MONTHS = 3


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
    price_per_unit: float,
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


def _add_allowance(current: pd.Series, extra: pd.Series) -> pd.Series:
    # Unlimited plus anything stays unlimited (NaN); a missing add-on allowance adds nothing.
    return current + extra.fillna(0.0)


def plan_fit(frame: pd.DataFrame, tariff: Tariff = TARIFF) -> pd.DataFrame:
    """Plan fit per row of (customer features, offer features); returns the output columns.

    Costs are monthly means over the last three months of actual usage. A plan replaces the
    current plan; an add-on adds its allowance and fee to the current plan; a loyalty offer keeps
    the plan at the new-customer price; payment help does not change the usage cost.
    """
    kind = frame["offer_kind_code"].astype(float).to_numpy()
    is_plan = kind == OFFER_KIND_CODES["plan"]
    is_addon = kind == OFFER_KIND_CODES["addon"]
    is_loyalty = kind == OFFER_KIND_CODES["loyalty"]

    current_fee = frame["current_monthly_fee_sek"].astype(float)
    new_customer_fee = frame["current_new_customer_fee_sek"].astype(float).fillna(current_fee)
    allowance_data = pd.Series(
        np.where(
            is_plan,
            frame["offer_data_gb"].astype(float),
            np.where(
                is_addon,
                _add_allowance(
                    frame["current_data_gb"].astype(float), frame["offer_data_gb"].astype(float)
                ),
                frame["current_data_gb"].astype(float),
            ),
        ),
        index=frame.index,
    )
    allowance_voice = pd.Series(
        np.where(
            is_plan,
            frame["offer_voice_minutes"].astype(float),
            np.where(
                is_addon,
                _add_allowance(
                    frame["current_voice_minutes"].astype(float),
                    frame["offer_voice_minutes"].astype(float),
                ),
                frame["current_voice_minutes"].astype(float),
            ),
        ),
        index=frame.index,
    )
    allowance_roaming = pd.Series(
        np.where(
            is_plan,
            frame["offer_roaming_data_gb"].astype(float).fillna(0.0),
            np.where(
                is_addon,
                _add_allowance(
                    frame["current_roaming_data_gb"].astype(float),
                    frame["offer_roaming_data_gb"].astype(float),
                ),
                frame["current_roaming_data_gb"].astype(float),
            ),
        ),
        index=frame.index,
    )
    offer_fee = np.where(
        is_plan,
        frame["offer_monthly_fee_sek"].astype(float),
        np.where(
            is_addon,
            current_fee + frame["offer_monthly_fee_sek"].astype(float),
            np.where(
                is_loyalty,
                np.minimum(current_fee, new_customer_fee),
                current_fee,
            ),
        ),
    )

    offer_overage = np.zeros(len(frame))
    current_overage = np.zeros(len(frame))
    data_share = np.zeros(len(frame))
    for month in range(1, FIT_MONTHS + 1):
        data = frame[f"data_gb_m{month}"].astype(float).fillna(0.0).to_numpy()
        voice = frame[f"voice_minutes_m{month}"].astype(float).fillna(0.0).to_numpy()
        roaming = frame[f"roaming_data_gb_m{month}"].astype(float).fillna(0.0).to_numpy()
        offer_overage += monthly_overage_sek(
            data, voice, roaming, allowance_data, allowance_voice, allowance_roaming, tariff
        )
        current_overage += monthly_overage_sek(
            data,
            voice,
            roaming,
            frame["current_data_gb"].astype(float),
            frame["current_voice_minutes"].astype(float),
            frame["current_roaming_data_gb"].astype(float),
            tariff,
        )
        allowance = allowance_data.to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(
                np.isnan(allowance), 0.0, np.where(allowance > 0, data / allowance, 0.0)
            )
        data_share += share
    offer_overage /= FIT_MONTHS
    current_overage /= FIT_MONTHS
    current_cost = current_fee.to_numpy() + current_overage
    offer_cost = offer_fee + offer_overage
    return pd.DataFrame(
        {
            "fit_current_cost_sek_per_month": np.round(current_cost, 2),
            "fit_offer_cost_sek_per_month": np.round(offer_cost, 2),
            "fit_saving_sek_per_month": np.round(current_cost - offer_cost, 2),
            "fit_offer_overage_sek_per_month": np.round(offer_overage, 2),
            "fit_current_overage_sek_per_month": np.round(current_overage, 2),
            "fit_data_allowance_used": np.round(data_share / FIT_MONTHS, 4),
        },
        index=frame.index,
    )
