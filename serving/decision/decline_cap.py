"""The frequency cap: an offer a customer declined is not offered again for their next invoices.

A decline made on one of the customer's last ``invoices`` invoices before the one being decided
blocks its offer (``OFFERS_DECLINE_CAP_INVOICES``); a decline made longer ago no longer does.
Each invoice has one decision, so an invoice is known here by its decision's id. The API's
decision log, the batch invoice run and the off-policy evaluation all ask this rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Decline:
    """An offer the customer declined, and the decision of the invoice it was shown on."""

    offer_id: str
    decision_id: str


@dataclass(frozen=True)
class DeclineCap:
    """How many invoices a decline keeps its offer away."""

    invoices: int

    def __post_init__(self) -> None:
        if self.invoices < 0:
            raise ValueError("the decline cap counts invoices: 0 or more")

    @property
    def window(self) -> int:
        """How many of the customer's latest invoices can hold a decline that still blocks."""
        return self.invoices

    @overload
    def blocks(self, invoices_ago: int) -> bool: ...

    @overload
    def blocks(self, invoices_ago: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]: ...

    def blocks(self, invoices_ago: int | npt.NDArray[np.integer]) -> bool | npt.NDArray[np.bool_]:
        """Whether a decline made ``invoices_ago`` invoices before this one still blocks its offer.

        1 is the customer's last invoice before this one. Element-wise on an array.
        """
        return (invoices_ago >= 1) & (invoices_ago <= self.invoices)

    def capped(self, declines: Iterable[Decline], latest: Sequence[str]) -> frozenset[str]:
        """The offers blocked for a customer.

        ``latest`` are the decisions of the customer's invoices before this one, newest first (at
        least the last :attr:`window` of them); a decline on a decision not among them is older.
        """
        invoices_ago = {decision_id: ago for ago, decision_id in enumerate(latest, start=1)}
        return frozenset(
            decline.offer_id
            for decline in declines
            if decline.decision_id in invoices_ago
            and self.blocks(invoices_ago[decline.decision_id])
        )
