"""Monthly usage: heavy-tailed, drifting upwards, with summer travel abroad."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Travel abroad by calendar month (January first), relative to a customer's usual rate.
TRAVEL_SEASON = np.array([0.6, 0.8, 0.8, 1.0, 1.0, 1.6, 2.6, 1.6, 1.0, 0.9, 0.7, 1.2])
MEAN_DATA_GROWTH_PER_MONTH = 0.012


@dataclass(frozen=True)
class MonthlyUsage:
    data_gb: np.ndarray
    voice_minutes: np.ndarray
    sms: np.ndarray
    roaming_days: np.ndarray
    roaming_data_gb: np.ndarray


@dataclass
class UsageProfile:
    """Each customer's usual usage; ``log_data_gb`` drifts month by month."""

    log_data_gb: np.ndarray
    data_growth: np.ndarray
    log_voice_minutes: np.ndarray
    sms_rate: np.ndarray

    @classmethod
    def draw(
        cls, rng: np.random.Generator, age: np.ndarray, is_business: np.ndarray
    ) -> UsageProfile:
        n = len(age)
        young = age < 30
        old = age >= 65
        return cls(
            log_data_gb=np.log(4.5) + 0.6 * young - 0.6 * old + rng.normal(0.0, 1.05, n),
            data_growth=rng.normal(MEAN_DATA_GROWTH_PER_MONTH, 0.01, n),
            log_voice_minutes=np.log(120.0) + 0.7 * is_business + 0.2 * old + rng.normal(0, 0.9, n),
            sms_rate=np.exp(rng.normal(np.log(10.0), 1.0, n)) * np.where(young, 1.5, 1.0),
        )

    def data_need_gb(self, customers: np.ndarray, months_ago: np.ndarray | int = 0) -> np.ndarray:
        """Typical monthly data use ``months_ago`` months back (the growth run backwards)."""
        return np.exp(
            self.log_data_gb[customers] - self.data_growth[customers] * np.asarray(months_ago)
        )

    def drift(self, rng: np.random.Generator) -> None:
        """One month of change in everyone's typical data use."""
        self.log_data_gb += self.data_growth + rng.normal(0.0, 0.05, len(self.log_data_gb))

    def month(
        self,
        rng: np.random.Generator,
        customers: np.ndarray,
        travel_rate: np.ndarray,
        calendar_month: int,
        days_in_month: int,
    ) -> MonthlyUsage:
        """One month of usage for ``customers``, rounded as the operator bills it."""
        n = len(customers)
        data = np.exp(self.log_data_gb[customers] + rng.normal(-0.045, 0.3, n))
        voice = np.exp(self.log_voice_minutes[customers] + rng.normal(-0.03, 0.25, n))
        sms = rng.poisson(self.sms_rate[customers] * np.exp(rng.normal(-0.045, 0.3, n)))
        travels = rng.random(n) < np.minimum(travel_rate * TRAVEL_SEASON[calendar_month - 1], 0.9)
        days = np.where(travels, np.minimum(rng.geometric(0.2, n), days_in_month), 0)
        daily_gb = np.exp(self.log_data_gb[customers]) / 30.0 * 0.7 * np.exp(rng.normal(0, 0.5, n))
        return MonthlyUsage(
            data_gb=np.round(data, 2),
            voice_minutes=np.round(voice, 1),
            sms=sms.astype(np.int64),
            roaming_days=days.astype(np.int64),
            roaming_data_gb=np.round(days * daily_gb, 2),
        )
