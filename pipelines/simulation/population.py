"""The customers of the simulated Swedish mobile operator: who they are and when they joined."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.calendar import year_of
from pipelines.simulation.behaviour import Traits, draw_traits
from pipelines.simulation.timeline import Timeline

# Swedish regions (län), weighted by population in millions.
REGIONS: tuple[tuple[str, float], ...] = (
    ("Stockholm", 2.45),
    ("Västra Götaland", 1.77),
    ("Skåne", 1.42),
    ("Östergötland", 0.47),
    ("Uppsala", 0.40),
    ("Jönköping", 0.37),
    ("Halland", 0.34),
    ("Örebro", 0.31),
    ("Södermanland", 0.30),
    ("Dalarna", 0.29),
    ("Gävleborg", 0.29),
    ("Värmland", 0.28),
    ("Västmanland", 0.28),
    ("Västerbotten", 0.27),
    ("Norrbotten", 0.25),
    ("Kalmar", 0.25),
    ("Västernorrland", 0.24),
    ("Kronoberg", 0.20),
    ("Blekinge", 0.16),
    ("Jämtland", 0.13),
    ("Gotland", 0.06),
)
# Age bands at the world's end: (youngest, oldest, share). Under-18s are on a parent's account.
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (12, 17, 0.02),
    (18, 29, 0.18),
    (30, 44, 0.26),
    (45, 64, 0.33),
    (65, 85, 0.21),
)
BUSINESS_SHARE = 0.10
BILLING_DAYS = (1, 10, 20)
BILLING_DAY_SHARES = (0.4, 0.3, 0.3)
# New customers per month, as a share of the customers at the start; about what churn takes away.
SIGNUP_RATE = 0.011
MEAN_TENURE_MONTHS = 80.0
MAX_TENURE_YEARS = 15
# Offers go out with every third invoice of a customer.
DECISION_EVERY_MONTHS = 3


@dataclass(frozen=True)
class Population:
    """Static facts per customer, ordered by signup (customer number = position + 1)."""

    birth_year: np.ndarray
    signup_date: np.ndarray
    signup_month: np.ndarray  # simulated month of signup; -1 when before the first month
    region: np.ndarray
    is_business: np.ndarray
    billing_day: np.ndarray
    decision_phase: np.ndarray
    paper_invoice: np.ndarray
    traits: Traits

    @property
    def size(self) -> int:
        return len(self.birth_year)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    shares = np.array([band[2] for band in AGE_BANDS])
    band = rng.choice(len(AGE_BANDS), size=n, p=shares / shares.sum())
    low = np.array([b[0] for b in AGE_BANDS])[band]
    high = np.array([b[1] for b in AGE_BANDS])[band]
    return rng.integers(low, high + 1)


def draw_population(rng: np.random.Generator, customers: int, timeline: Timeline) -> Population:
    """Customers already there at the first month, and those who sign up during the months."""
    months = timeline.months
    joining = round(customers * months * SIGNUP_RATE / (1 + months * SIGNUP_RATE))
    existing = customers - joining

    age = _ages(rng, customers)
    adult_working = (age >= 25) & (age <= 70)
    business_share = min(1.0, BUSINESS_SHARE * customers / max(int(adult_working.sum()), 1))
    is_business = adult_working & (rng.random(customers) < business_share)

    # Tenure of those already there: long-lived customers, no more than 15 years, and never
    # joined before 18 (10 for a child on a parent's account).
    age_at_start = age[:existing] - months / 12
    youngest_signup_age = np.where(age[:existing] < 18, 10, 18)
    max_days = np.clip(
        (age_at_start - youngest_signup_age) * 365.25, 30, MAX_TENURE_YEARS * 365.25
    ).astype(np.int64)
    tenure_days = rng.exponential(MEAN_TENURE_MONTHS * 30.44, existing).astype(np.int64) + 1
    too_long = tenure_days > max_days
    tenure_days[too_long] = (
        rng.uniform(0.02, 1.0, int(too_long.sum())) * max_days[too_long]
    ).astype(np.int64) + 1
    signup_existing = timeline.first_day - tenure_days.astype("timedelta64[D]")

    signup_month_new = rng.integers(0, months, joining)
    days_in = np.array([timeline.days_in(t) for t in range(months)])
    offset = (rng.random(joining) * days_in[signup_month_new]).astype(np.int64)
    signup_new = timeline.starts[signup_month_new] + offset.astype("timedelta64[D]")

    signup = np.concatenate([signup_existing, signup_new])
    signup_month = np.concatenate([np.full(existing, -1), signup_month_new])
    order = np.argsort(signup, kind="stable")

    age, is_business, signup, signup_month = (
        age[order],
        is_business[order],
        signup[order],
        signup_month[order],
    )
    traits = draw_traits(rng, age.astype(float), is_business)
    weights = np.array([w for _, w in REGIONS])
    paper = rng.random(customers) < _sigmoid(
        -1.2 + 0.06 * (age - 55) - 2.5 * (traits.digital_engagement - 0.5) - 1.5 * is_business
    )
    return Population(
        birth_year=year_of(np.array([timeline.last_day]))[0] - age,
        signup_date=signup,
        signup_month=signup_month,
        region=rng.choice(len(REGIONS), size=customers, p=weights / weights.sum()),
        is_business=is_business,
        billing_day=rng.choice(
            np.array(BILLING_DAYS), size=customers, p=np.array(BILLING_DAY_SHARES)
        ),
        decision_phase=rng.integers(0, DECISION_EVERY_MONTHS, customers),
        paper_invoice=paper & (age >= 18),
        traits=traits,
    )
