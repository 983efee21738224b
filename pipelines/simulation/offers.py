"""The catalog as arrays, so many customers can be priced against every offer at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.catalog import Catalog, Offer
from core.plan_fit import OFFER_KIND_CODES
from pipelines.simulation.timeline import OPEN_END

PLAN = OFFER_KIND_CODES["plan"]
ADDON = OFFER_KIND_CODES["addon"]
LOYALTY = OFFER_KIND_CODES["loyalty"]
PAYMENT_HELP = OFFER_KIND_CODES["payment_help"]


def _allowance(value: float | None) -> float:
    return np.nan if value is None else float(value)


@dataclass(frozen=True)
class OfferArrays:
    """One entry per catalog offer, in catalog order. NaN allowances are unlimited."""

    offer_ids: tuple[str, ...]
    kind: np.ndarray
    monthly_fee: np.ndarray
    new_customer_fee: np.ndarray
    data_gb: np.ndarray
    voice_minutes: np.ndarray
    roaming_data_gb: np.ndarray
    binding_months: np.ndarray
    valid_from: np.ndarray
    valid_to: np.ndarray
    for_consumer: np.ndarray
    for_business: np.ndarray
    min_tenure_months: np.ndarray
    requires_good_standing: np.ndarray

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> OfferArrays:
        offers: tuple[Offer, ...] = catalog.offers
        if not catalog.plans:
            raise ValueError("the catalog has no plans; a simulated customer needs one")
        return cls(
            offer_ids=tuple(offer.offer_id for offer in offers),
            kind=np.array([OFFER_KIND_CODES[offer.kind] for offer in offers], dtype=np.int64),
            monthly_fee=np.array([offer.monthly_fee_sek for offer in offers]),
            new_customer_fee=np.array([offer.price_for_new_customers for offer in offers]),
            data_gb=np.array([_allowance(offer.data_gb) for offer in offers]),
            voice_minutes=np.array([_allowance(offer.voice_minutes) for offer in offers]),
            roaming_data_gb=np.array([_allowance(offer.roaming_data_gb) for offer in offers]),
            binding_months=np.array([offer.binding_months for offer in offers], dtype=np.int64),
            valid_from=np.array([offer.valid_from for offer in offers], dtype="datetime64[D]"),
            valid_to=np.array(
                [OPEN_END if offer.valid_to is None else offer.valid_to for offer in offers],
                dtype="datetime64[D]",
            ),
            for_consumer=np.array(["consumer" in offer.segments for offer in offers]),
            for_business=np.array(["business" in offer.segments for offer in offers]),
            min_tenure_months=np.array([offer.min_tenure_months for offer in offers]),
            requires_good_standing=np.array([offer.requires_good_standing for offer in offers]),
        )

    def __len__(self) -> int:
        return len(self.offer_ids)

    @property
    def plans(self) -> np.ndarray:
        """Indices of the plans."""
        return np.flatnonzero(self.kind == PLAN)

    def index(self, offer_id: str) -> int:
        return self.offer_ids.index(offer_id)

    def indices(self, offer_ids: np.ndarray) -> np.ndarray:
        """Index of each offer id; -1 for an id the catalog does not hold."""
        lookup = {offer_id: i for i, offer_id in enumerate(self.offer_ids)}
        return np.array([lookup.get(str(x), -1) for x in offer_ids], dtype=np.int64)

    def available(self, days: np.ndarray, is_business: np.ndarray) -> np.ndarray:
        """``[customer, offer]``: sold on that customer's day and to that customer's segment."""
        days = np.asarray(days, dtype="datetime64[D]")[:, None]
        valid = (self.valid_from[None, :] <= days) & (days <= self.valid_to[None, :])
        segment = np.where(
            np.asarray(is_business)[:, None], self.for_business[None, :], self.for_consumer[None, :]
        )
        return valid & segment
