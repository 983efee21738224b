"""Contracts over time: which plan each customer has, at what fee, bound until when."""

from __future__ import annotations

import numpy as np

from core.calendar import DAY, add_months
from core.plan_fit import TARIFF, monthly_overage_sek, overage_sek
from pipelines.simulation.offers import OfferArrays

NOT_A_DATE = np.datetime64("NaT", "D")
# How much people misjudge their needs when they pick a plan (SEK of taste on top of price).
PLAN_TASTE_SEK = 25.0
# People pick a plan for somewhat more data than they usually use.
PLAN_HEADROOM = 1.8


class ContractBook:
    """The current contract row of every customer, and the rows already closed."""

    def __init__(self, size: int, offers: OfferArrays) -> None:
        self.offers = offers
        self.plan = np.full(size, -1, dtype=np.int64)
        self.fee = np.zeros(size)
        self.valid_from = np.full(size, NOT_A_DATE)
        self.binding_end = np.full(size, NOT_A_DATE)
        self.ended = np.zeros(size, dtype=bool)
        self._closed: list[tuple[np.ndarray, ...]] = []

    def start(
        self, customers: np.ndarray, plan: np.ndarray, valid_from: np.ndarray, fee: np.ndarray
    ) -> None:
        """Open a row; binding runs the plan's binding months from ``valid_from``."""
        binding = self.offers.binding_months[plan]
        self.plan[customers] = plan
        self.fee[customers] = fee
        self.valid_from[customers] = valid_from
        self.binding_end[customers] = np.where(
            binding > 0, add_months(valid_from, binding), NOT_A_DATE
        )

    def _close(self, customers: np.ndarray, valid_to: np.datetime64) -> None:
        self._closed.append(
            (
                customers.copy(),
                self.plan[customers],
                self.valid_from[customers],
                np.full(len(customers), valid_to),
                self.binding_end[customers],
                self.fee[customers],
            )
        )

    def change(
        self, customers: np.ndarray, plan: np.ndarray, fee: np.ndarray, valid_from: np.datetime64
    ) -> None:
        """End the current rows the day before ``valid_from`` and open new ones."""
        self._close(customers, valid_from - DAY)
        self.start(customers, plan, np.full(len(customers), valid_from), fee)

    def end(self, customers: np.ndarray, valid_to: np.datetime64) -> None:
        """The customers leave: their current row ends on ``valid_to``."""
        self._close(customers, valid_to)
        self.ended[customers] = True

    def in_binding(self, customers: np.ndarray, day: np.datetime64) -> np.ndarray:
        end = self.binding_end[customers]
        return ~np.isnat(end) & (day < end)

    def allowances(self, customers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plan = self.plan[customers]
        return (
            self.offers.data_gb[plan],
            self.offers.voice_minutes[plan],
            self.offers.roaming_data_gb[plan],
        )

    def rows(self) -> dict[str, np.ndarray]:
        """Every row, ordered by customer and valid_from; open rows have valid_to NaT."""
        open_rows = np.flatnonzero((self.plan >= 0) & ~self.ended)
        parts = [
            *self._closed,
            (
                open_rows,
                self.plan[open_rows],
                self.valid_from[open_rows],
                np.full(len(open_rows), NOT_A_DATE),
                self.binding_end[open_rows],
                self.fee[open_rows],
            ),
        ]
        names = ("customer", "plan", "valid_from", "valid_to", "binding_end", "fee")
        columns = {
            name: np.concatenate([part[i] for part in parts]) for i, name in enumerate(names)
        }
        order = np.lexsort((columns["valid_from"], columns["customer"]))
        return {name: values[order] for name, values in columns.items()}


def plan_costs(
    offers: OfferArrays,
    fees: np.ndarray,
    data_gb: np.ndarray,
    voice_minutes: np.ndarray,
    roaming_data_gb: np.ndarray,
) -> np.ndarray:
    """``[customer, plan]``: each plan's fee (``fees`` per plan) plus the month's overage on it."""
    plans = offers.plans
    return fees[None, :] + monthly_overage_sek(
        data_gb[:, None],
        voice_minutes[:, None],
        roaming_data_gb[:, None],
        offers.data_gb[plans][None, :],
        offers.voice_minutes[plans][None, :],
        offers.roaming_data_gb[plans][None, :],
    )


def _require_a_plan(available: np.ndarray, on_day: np.ndarray) -> None:
    none = ~available.any(axis=1)
    if none.any():
        raise ValueError(
            f"the catalog sells no plan to some customers on {on_day[np.argmax(none)]}; "
            "every segment needs a plan valid on every simulated day"
        )


def choose_plan(
    rng: np.random.Generator,
    offers: OfferArrays,
    data_need_gb: np.ndarray,
    voice_minutes: np.ndarray,
    is_business: np.ndarray,
    on_day: np.ndarray,
) -> np.ndarray:
    """The plan a customer signs for: cheapest for the usage they expect, with some taste."""
    plans = offers.plans
    available = offers.available(on_day, is_business)[:, plans]
    _require_a_plan(available, on_day)
    expected = offers.new_customer_fee[plans][None, :] + overage_sek(
        data_need_gb[:, None] * PLAN_HEADROOM,
        offers.data_gb[plans][None, :],
        TARIFF.data_sek_per_gb,
    )
    expected += overage_sek(
        voice_minutes[:, None], offers.voice_minutes[plans][None, :], TARIFF.voice_sek_per_minute
    )
    taste = rng.gumbel(0.0, PLAN_TASTE_SEK, expected.shape)
    return plans[np.argmin(np.where(available, expected + taste, np.inf), axis=1)]


def best_fitting_plan(
    offers: OfferArrays,
    history: tuple[np.ndarray, np.ndarray, np.ndarray],
    is_business: np.ndarray,
    on_day: np.datetime64,
) -> np.ndarray:
    """The plan with the lowest existing-customer cost for the months in ``history``.

    ``history`` holds data, voice and roaming data as ``[months, customers]`` (NaN = no month).
    """
    plans = offers.plans
    available = offers.available(np.full(len(is_business), on_day), is_business)[:, plans]
    _require_a_plan(available, np.full(len(is_business), on_day))
    data, voice, roaming = history
    total = np.zeros(available.shape)
    counted = np.zeros(available.shape[0])
    for month in range(data.shape[0]):
        present = ~np.isnan(data[month])
        cost = plan_costs(
            offers,
            offers.monthly_fee[plans],
            np.nan_to_num(data[month]),
            np.nan_to_num(voice[month]),
            np.nan_to_num(roaming[month]),
        )
        total += np.where(present[:, None], cost, 0.0)
        counted += present
    mean = total / np.maximum(counted, 1)[:, None]
    return plans[np.argmin(np.where(available, mean, np.inf), axis=1)]
