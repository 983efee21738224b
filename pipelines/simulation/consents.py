"""Consent per purpose over time: given at signup, changed later (objections included)."""

from __future__ import annotations

import numpy as np

from core.contract import CONSENT_PURPOSES
from pipelines.simulation.behaviour import Traits

MARKETING = CONSENT_PURPOSES.index("marketing")
PROFILING = CONSENT_PURPOSES.index("profiling")
# Consents on record start when the GDPR applied; older customers were asked again then.
RECORDS_START = np.datetime64("2018-05-25T00:00:00", "us")
ASKED_AGAIN_DAYS = 90
GRANTED_AT_SIGNUP = {"marketing": 0.72, "profiling": 0.58, "usage_insights": 0.64}
WITHDRAWN_PER_MONTH = {"marketing": 0.006, "profiling": 0.004, "usage_insights": 0.003}
GRANTED_PER_MONTH = {"marketing": 0.003, "profiling": 0.003, "usage_insights": 0.004}
CHANGED_BEFORE_FIRST_MONTH = 0.15
NOT_A_TIME = np.datetime64("NaT", "us")
_DAY_US = 86_400_000_000


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _random_times(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A uniform moment in ``[start, end)`` for each pair, in microseconds."""
    span = (end - start).astype(np.int64)
    return start + (rng.random(len(span)) * span).astype(np.int64).astype("timedelta64[us]")


class ConsentLog:
    """The current consent per purpose and customer, and every row written so far."""

    def __init__(self, size: int) -> None:
        self.granted = np.zeros((len(CONSENT_PURPOSES), size), dtype=bool)
        self.changed_at = np.full((len(CONSENT_PURPOSES), size), NOT_A_TIME)
        self._rows: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []

    def _record(
        self, purpose: int, customers: np.ndarray, granted: np.ndarray, at: np.ndarray
    ) -> None:
        self.granted[purpose, customers] = granted
        self._rows.append((customers, purpose, granted.copy(), at))

    def sign_up(
        self,
        rng: np.random.Generator,
        customers: np.ndarray,
        signup_date: np.ndarray,
        traits: Traits,
    ) -> np.ndarray:
        """One row per purpose at signup (or when asked again in 2018); returns the moments."""
        day = signup_date.astype("datetime64[us]")
        asked_again = day < RECORDS_START
        start = np.where(asked_again, RECORDS_START, day)
        span = np.where(asked_again, ASKED_AGAIN_DAYS, 1) * _DAY_US
        at = _random_times(rng, start, start + span.astype("timedelta64[us]"))
        # Those who welcome offers allow marketing; the digitally engaged allow profiling.
        leaning = {
            "marketing": 0.8 * traits.openness,
            "profiling": 1.5 * (traits.digital_engagement - 0.5),
            "usage_insights": 0.5 * traits.openness,
        }
        for p, purpose in enumerate(CONSENT_PURPOSES):
            share = _logit(GRANTED_AT_SIGNUP[purpose])
            granted = rng.random(len(customers)) < _sigmoid(share + leaning[purpose])
            self._record(p, customers, granted, at)
        return at

    def change_before(
        self,
        rng: np.random.Generator,
        customers: np.ndarray,
        since: np.ndarray,
        until: np.datetime64,
    ) -> None:
        """Some customers changed one consent between their first rows and ``until``."""
        mask = rng.random(len(customers)) < CHANGED_BEFORE_FIRST_MONTH
        changed = customers[mask]
        at = _random_times(rng, since[mask], np.full(len(changed), until.astype("datetime64[us]")))
        purpose = rng.integers(0, len(CONSENT_PURPOSES), len(changed))
        for p in range(len(CONSENT_PURPOSES)):
            these = purpose == p
            who = changed[these]
            self._record(p, who, ~self.granted[p, who], at[these])

    def month(
        self,
        rng: np.random.Generator,
        customers: np.ndarray,
        start: np.datetime64,
        end: np.datetime64,
    ) -> None:
        """A month of changes: some withdraw a consent (an objection), some grant one."""
        self.changed_at[:] = NOT_A_TIME
        start_us = start.astype("datetime64[us]")
        end_us = end.astype("datetime64[us]")
        for p, purpose in enumerate(CONSENT_PURPOSES):
            now = self.granted[p, customers]
            rate = np.where(now, WITHDRAWN_PER_MONTH[purpose], GRANTED_PER_MONTH[purpose])
            who = customers[rng.random(len(customers)) < rate]
            at = _random_times(rng, np.full(len(who), start_us), np.full(len(who), end_us))
            self._record(p, who, ~self.granted[p, who], at)
            self.changed_at[p, who] = at

    def granted_at(self, purpose: int, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Consent as it stood at ``at`` (a moment in the current month, per customer)."""
        changed_later = self.changed_at[purpose, customers] > at
        return self.granted[purpose, customers] ^ changed_later

    def rows(self) -> dict[str, np.ndarray]:
        """Every row, ordered by customer, purpose and time."""
        columns = {
            "customer": np.concatenate([r[0] for r in self._rows]),
            "purpose": np.concatenate([np.full(len(r[0]), r[1]) for r in self._rows]),
            "granted": np.concatenate([r[2] for r in self._rows]),
            "updated_at": np.concatenate([r[3] for r in self._rows]),
        }
        order = np.lexsort((columns["updated_at"], columns["purpose"], columns["customer"]))
        return {name: values[order] for name, values in columns.items()}
