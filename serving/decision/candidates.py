"""Candidate offers: catalog offers as model attributes, eligibility rules, and plan fit."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.catalog import Offer
from core.plan_fit import (
    CONTRACT_INPUTS,
    OFFER_INPUTS,
    OFFER_KIND_CODES,
    PLAN_FIT_OUTPUTS,
    USAGE_INPUTS,
    offer_identity_code,
    plan_fit_arrays,
    plan_fit_rows,
)
from features.views import OFFER_ATTRIBUTES
from serving.decision.guardrails import fair_price, new_customer_price
from serving.decision.inputs import Account, as_float

# Payment help that spreads a debt; any other payment help avoids the invoice fee.
DEBT_HELP_OFFERS = frozenset({"PAY_INSTALMENT"})

NOT_VALID_ON_DATE = "not_valid_on_date"
NOT_FOR_SEGMENT = "not_for_segment"
DECLINED_RECENTLY = "declined_recently"
CURRENT_PLAN = "current_plan"
TENURE_TOO_SHORT = "tenure_too_short"
DOWNGRADE_WHILE_BOUND = "downgrade_while_bound"
PAYMENT_HELP_ONLY = "payment_help_only"
NO_DEBT = "no_debt"
NO_INVOICE_FEE = "no_invoice_fee"
NOT_IN_GOOD_STANDING = "not_in_good_standing"
NO_LOYALTY_GAP = "no_loyalty_gap"
CONTRACT_ENDED = "contract_ended"


def is_debt_help(offer: Offer) -> bool:
    return offer.kind == "payment_help" and offer.offer_id in DEBT_HELP_OFFERS


def nan_if_none(value: float | None) -> float:
    """A catalog allowance or price as a float: ``None`` (unlimited, or none) as NaN."""
    return math.nan if value is None else float(value)


def offer_attributes(offer: Offer) -> dict[str, float]:
    """The offer as ``features.views.OFFER_ATTRIBUTES``, in that order (NaN = unlimited)."""
    return {
        "offer_kind_code": float(OFFER_KIND_CODES[offer.kind]),
        "offer_monthly_fee_sek": offer.monthly_fee_sek,
        "offer_new_customer_fee_sek": nan_if_none(offer.new_customer_fee_sek),
        "offer_data_gb": nan_if_none(offer.data_gb),
        "offer_voice_minutes": nan_if_none(offer.voice_minutes),
        "offer_roaming_data_gb": nan_if_none(offer.roaming_data_gb),
        "offer_binding_months": float(offer.binding_months),
        "offer_min_tenure_months": float(offer.min_tenure_months),
        "offer_identity_code": float(offer_identity_code(offer.offer_id)),
    }


# Each catalog offer's attribute row, worked out once: offers are frozen, and a decision asks for
# the same few dozen again and again. By the offer object's id, the offer kept with its row so
# that the id is not reused while the entry lives.
_ATTRIBUTE_ROWS: dict[int, tuple[Offer, tuple[float, ...]]] = {}


def _attribute_row(offer: Offer) -> tuple[float, ...]:
    held = _ATTRIBUTE_ROWS.get(id(offer))
    if held is None or held[0] is not offer:
        held = (offer, tuple(offer_attributes(offer).values()))
        _ATTRIBUTE_ROWS[id(offer)] = held
    return held[1]


def offer_matrix(offers: Sequence[Offer]) -> np.ndarray:
    """Offer attributes, one row per offer, columns in ``OFFER_ATTRIBUTES`` order."""
    if not offers:
        return np.empty((0, len(OFFER_ATTRIBUTES)))
    return np.array([_attribute_row(offer) for offer in offers], dtype=float)


def eligibility(
    offer: Offer,
    account: Account,
    *,
    segment: str,
    invoice_date: dt.date,
    recently_declined: frozenset[str],
) -> str | None:
    """Why this customer may not get this offer on this invoice, or ``None`` when they may."""
    if not offer.is_valid_on(invoice_date):
        return NOT_VALID_ON_DATE
    if account.has_left_by(invoice_date) and not is_debt_help(offer):
        # A former customer's final invoice: no plan, add-on, price or way to pay future
        # invoices is theirs to take. A debt still open may be spread (checked below). Before
        # the rules an evaluation may lift, since this one is not a choice.
        return CONTRACT_ENDED
    if segment not in offer.segments:
        return NOT_FOR_SEGMENT
    if offer.offer_id in recently_declined:
        return DECLINED_RECENTLY
    if offer.offer_id == account.current_plan_id:
        return CURRENT_PLAN
    if account.tenure_months < offer.min_tenure_months:
        return TENURE_TOO_SHORT
    if offer.kind == "payment_help":
        if is_debt_help(offer):
            return None if account.in_payment_trouble else NO_DEBT
        return None if account.invoice_fee_last_sek > 0 else NO_INVOICE_FEE
    if account.in_payment_trouble:
        return PAYMENT_HELP_ONLY
    if offer.requires_good_standing and account.late_payments_12m > 0:
        return NOT_IN_GOOD_STANDING
    if offer.kind == "plan":
        if account.is_bound_on(invoice_date) and (
            fair_price(offer) < account.current_monthly_fee_sek
        ):
            return DOWNGRADE_WHILE_BOUND
    elif offer.kind == "loyalty" and not (
        account.current_new_customer_fee_sek < account.current_monthly_fee_sek
    ):
        # NaN (no new-customer price for the plan) compares False: no gap, no loyalty offer.
        return NO_LOYALTY_GAP
    return None


@dataclass(frozen=True)
class PlanFit:
    """One row of ``core.plan_fit.plan_fit``: monthly means over the last three months."""

    current_cost_sek: float
    offer_cost_sek: float
    saving_sek: float
    offer_overage_sek: float
    current_overage_sek: float
    data_allowance_used: float

    @classmethod
    def from_row(cls, row: np.ndarray) -> PlanFit:
        return cls(*row.tolist())


_FIT_ACCOUNT_INPUTS = (*USAGE_INPUTS, *CONTRACT_INPUTS)
_OFFER_INPUT_POSITIONS = [list(OFFER_ATTRIBUTES).index(name) for name in OFFER_INPUTS]


def _fit_inputs(features: Mapping[str, Any]) -> np.ndarray:
    """An account's plan-fit inputs (``USAGE_INPUTS``, ``CONTRACT_INPUTS``), NaN when unknown,
    from its features (``Account.features``)."""
    return np.array([as_float(features.get(name)) for name in _FIT_ACCOUNT_INPUTS])


# One customer's offers up to this many are priced in plain Python (``plan_fit_rows``): for a
# decision's handful of offers numpy's cost per call is most of the work (250 µs against 45 µs
# for five offers); at about forty offers the two cost the same.
_PRICED_ONE_BY_ONE = 32


def _fit_block(customers: np.ndarray, offers: np.ndarray) -> np.ndarray:
    """Plan fit of every customer row (``_fit_inputs``) against every offer row (an
    :func:`offer_matrix`), customer after customer: ``customers × offers`` rows of
    ``PLAN_FIT_OUTPUTS``. Each row is worked out on its own, so it is the same however many
    customers are worked out with it."""
    n_customers, n_offers = len(customers), len(offers)
    if n_customers == 1 and n_offers <= _PRICED_ONE_BY_ONE:
        return np.array(
            plan_fit_rows(customers[0].tolist(), offers[:, _OFFER_INPUT_POSITIONS].tolist()),
            dtype=float,
        ).reshape(n_offers, len(PLAN_FIT_OUTPUTS))
    block = np.hstack(
        [
            np.repeat(customers, n_offers, axis=0),
            np.tile(offers[:, _OFFER_INPUT_POSITIONS], (n_customers, 1)),
        ]
    )
    names = (*_FIT_ACCOUNT_INPUTS, *OFFER_INPUTS)
    fits = plan_fit_arrays({name: block[:, i] for i, name in enumerate(names)})
    return np.column_stack([fits[name] for name in PLAN_FIT_OUTPUTS])


def plan_fit_matrix(
    account: Account,
    offers: np.ndarray,
    *,
    known: PlanFitTable | None = None,
    offer_list: Sequence[Offer] = (),
) -> np.ndarray:
    """Plan fit for every offer row at once (one call of the training function).

    ``offers`` is an :func:`offer_matrix`; the result has ``PLAN_FIT_OUTPUTS`` columns.
    ``known``: plan fit already worked out for many accounts at once (the invoice run's slice),
    used when it holds this account's inputs and ``offer_list`` (the offers of ``offers``).
    """
    n = len(offers)
    if n == 0:
        return np.empty((0, len(PLAN_FIT_OUTPUTS)))
    customer = _fit_inputs(account.features)
    if known is not None:
        rows = known.rows(customer, offer_list)
        if rows is not None:
            return rows
    return _fit_block(customer[None, :], offers)


class PlanFitTable:
    """Plan fit of many accounts against the same offers, worked out in one call of the
    training function (in chunks), then read per decision: a decision finds its rows here
    instead of working them out for its account alone. Keyed by the account's plan-fit inputs
    themselves, so an account whose inputs it does not hold is worked out as before."""

    CHUNK_CUSTOMERS = 2_000

    def __init__(self, accounts: Iterable[Mapping[str, Any]], offers: Sequence[Offer]) -> None:
        """``accounts``: the accounts' features as the engine reads them (``Account.features``:
        the account row as of the invoice's billing period)."""
        self._offers = {offer.offer_id: (position, offer) for position, offer in enumerate(offers)}
        self._index: dict[bytes, int] = {}
        inputs: list[np.ndarray] = []
        for account in accounts:
            customer = _fit_inputs(account)
            key = customer.tobytes()
            if key not in self._index:
                self._index[key] = len(inputs)
                inputs.append(customer)
        attributes = offer_matrix(offers)
        width = len(PLAN_FIT_OUTPUTS)
        self._fits = np.empty((len(inputs), len(offers), width))
        for start in range(0, len(inputs), self.CHUNK_CUSTOMERS):
            chunk = np.array(inputs[start : start + self.CHUNK_CUSTOMERS])
            if len(offers):
                self._fits[start : start + len(chunk)] = _fit_block(chunk, attributes).reshape(
                    len(chunk), len(offers), width
                )

    def rows(self, customer: np.ndarray, offers: Sequence[Offer]) -> np.ndarray | None:
        """Plan fit rows of ``offers`` for these inputs; None when the table lacks either."""
        index = self._index.get(customer.tobytes())
        if index is None:
            return None
        positions = []
        for offer in offers:
            held = self._offers.get(offer.offer_id)
            if held is None or held[1] is not offer:
                return None
            positions.append(held[0])
        return self._fits[index, positions]


@dataclass(frozen=True)
class Candidate:
    """An eligible offer as this customer would get it.

    ``price_sek`` is the monthly fee shown: the fair price for plans and add-ons, the plan's
    new-customer price for loyalty. ``saving_sek`` is what the customer would have saved a month
    at that price (plan fit, or the invoice fee avoided); ``None`` when usage was not used.
    """

    offer: Offer
    price_sek: float
    fit: PlanFit | None
    saving_sek: float | None
    row: int = -1  # position in the model matrix, when scored


def shown_price(offer: Offer, account: Account) -> float:
    """The monthly fee shown: never above the new-customer price (for loyalty, of their plan)."""
    if offer.kind == "loyalty":
        return min(new_customer_price(offer, account), account.current_monthly_fee_sek)
    return fair_price(offer)


def customer_saving(offer: Offer, account: Account, fit: PlanFit) -> float:
    """Monthly saving for the customer at the price shown.

    Plan fit prices plans and add-ons at the catalog fee, the price the models saw; the fee is
    a constant in the offer's cost, so the fair-price discount adds to the saving one for one.
    """
    saving = fit.saving_sek
    if offer.kind in ("plan", "addon"):
        saving += offer.monthly_fee_sek - fair_price(offer)
    elif offer.kind == "payment_help" and not is_debt_help(offer):
        saving += account.invoice_fee_last_sek
    return round(saving, 2)


def fee_change(offer: Offer, account: Account, price_sek: float) -> float | None:
    """What the offer changes the customer's monthly fees by at the price shown, from contract
    and billing facts alone (no usage, so it may be stated without profiling consent).

    A plan or a loyalty price replaces today's plan fee (a loyalty price is a discount on it);
    an add-on adds its fee; a way to pay that avoids the invoice fee removes the fee last
    charged; payment help for a debt changes no fee. ``None`` when the current plan fee is
    unknown and the offer would replace it.
    """
    if offer.kind == "addon":
        return round(price_sek, 2)
    if offer.kind == "payment_help":
        avoided = 0.0 if is_debt_help(offer) else account.invoice_fee_last_sek
        return round(price_sek - avoided, 2)
    # Account reads an unknown fee as 0; a fee change against it would be the whole price.
    if not account.current_plan_id or math.isnan(
        as_float(account.features.get("current_monthly_fee_sek"))
    ):
        return None
    return round(price_sek - account.current_monthly_fee_sek, 2)
