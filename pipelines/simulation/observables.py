"""What the tables say about a customer and an offer at one moment.

The simulator's logging policy and hidden behaviour look at customers through these quantities,
and :mod:`pipelines.simulation.oracle` rebuilds them from the written tables with the same
functions, so the acceptance probability behind a logged outcome can be recomputed from data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from core.calendar import age_in_year, months_between
from core.plan_fit import FIT_MONTHS, plan_fit
from pipelines.simulation.offers import ADDON, LOYALTY, PLAN, OfferArrays


@dataclass(frozen=True)
class CustomerState:
    """One row per customer at ``as_of``. History arrays are ``[FIT_MONTHS, n]``, newest first.

    Usage history covers the complete months before ``as_of``'s month; invoice history the
    invoices dated in those months. NaN where a month has no row.
    """

    as_of: np.ndarray
    plan: np.ndarray
    monthly_fee: np.ndarray
    binding_end: np.ndarray
    signup_date: np.ndarray
    birth_year: np.ndarray
    data_gb: np.ndarray
    voice_minutes: np.ndarray
    roaming_data_gb: np.ndarray
    overage_sek: np.ndarray
    invoice_fee_sek: np.ndarray
    reminder_fee_sek: np.ndarray


@dataclass(frozen=True)
class OfferContext:
    """The facts about (customer, offer) pairs that the hidden behaviour responds to."""

    customer: np.ndarray
    offer: np.ndarray
    saving_sek: np.ndarray
    current_overage_sek: np.ndarray
    offer_overage_sek: np.ndarray
    months_over_allowance: np.ndarray
    fees_3m_sek: np.ndarray
    reminder_fees_3m_sek: np.ndarray
    paper_invoice: np.ndarray
    tenure_months: np.ndarray
    age: np.ndarray
    in_binding: np.ndarray
    pays_above_new_customers_sek: np.ndarray

    def take(self, rows: np.ndarray) -> OfferContext:
        return OfferContext(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _newest(history: np.ndarray) -> np.ndarray:
    """The newest non-NaN value of a ``[months, n]`` history, NaN when there is none."""
    result = np.full(history.shape[1], np.nan)
    for month in range(history.shape[0] - 1, -1, -1):
        present = ~np.isnan(history[month])
        result[present] = history[month][present]
    return result


def offer_context(
    state: CustomerState, customer: np.ndarray, offer: np.ndarray, offers: OfferArrays
) -> OfferContext:
    """Plan fit (core.plan_fit) and the billing, tenure and pricing facts for each pair."""
    plan = state.plan[customer]
    frame = pd.DataFrame(
        {
            **{
                f"{measure}_m{month + 1}": getattr(state, measure)[month][customer]
                for measure in ("data_gb", "voice_minutes", "roaming_data_gb")
                for month in range(FIT_MONTHS)
            },
            "current_monthly_fee_sek": state.monthly_fee[customer],
            "current_data_gb": offers.data_gb[plan],
            "current_voice_minutes": offers.voice_minutes[plan],
            "current_roaming_data_gb": offers.roaming_data_gb[plan],
            "current_new_customer_fee_sek": offers.new_customer_fee[plan],
            "offer_kind_code": offers.kind[offer],
            "offer_monthly_fee_sek": offers.monthly_fee[offer],
            "offer_data_gb": offers.data_gb[offer],
            "offer_voice_minutes": offers.voice_minutes[offer],
            "offer_roaming_data_gb": offers.roaming_data_gb[offer],
        }
    )
    fit = plan_fit(frame)
    invoice_fees = np.nansum(state.invoice_fee_sek, axis=0)
    reminder_fees = np.nansum(state.reminder_fee_sek, axis=0)
    paper = np.nan_to_num(_newest(state.invoice_fee_sek)) > 0
    months_over = (np.nan_to_num(state.overage_sek) > 0).sum(axis=0)
    tenure = months_between(state.signup_date, state.as_of)
    age = age_in_year(state.birth_year, state.as_of)
    in_binding = ~np.isnat(state.binding_end) & (state.as_of < state.binding_end)

    kind = offers.kind[offer]
    # What this customer would pay above a new customer: for a plan or add-on, on the offer;
    # for a loyalty offer, on the plan they already have.
    above_offer = offers.monthly_fee[offer] - offers.new_customer_fee[offer]
    above_current = state.monthly_fee[customer] - offers.new_customer_fee[plan]
    above = np.where(
        (kind == PLAN) | (kind == ADDON), above_offer, np.where(kind == LOYALTY, above_current, 0)
    )
    return OfferContext(
        customer=customer,
        offer=offer,
        saving_sek=fit["fit_saving_sek_per_month"].to_numpy(),
        current_overage_sek=fit["fit_current_overage_sek_per_month"].to_numpy(),
        offer_overage_sek=fit["fit_offer_overage_sek_per_month"].to_numpy(),
        months_over_allowance=months_over[customer],
        fees_3m_sek=(invoice_fees + reminder_fees)[customer],
        reminder_fees_3m_sek=reminder_fees[customer],
        paper_invoice=paper[customer],
        tenure_months=tenure[customer],
        age=age[customer],
        in_binding=in_binding[customer],
        pays_above_new_customers_sek=np.maximum(above, 0.0),
    )
