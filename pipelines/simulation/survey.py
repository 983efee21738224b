"""The simulated survey: adult customers answering the survey of docs/architecture.md.

Each answer is a latent attitude built from the same traits that drive the hidden behaviour
(digital engagement, price and fee sensitivity, fairness, openness, the felt gap between price
and value), plus noise. A respondent says yes when their attitude is among the highest, with the
cut set so that the share of yes equals the survey's figure within the groups the survey reports
(satisfaction levels for switching, age 18–29 for evaluating). Satisfaction itself is cut the
same way from latent satisfaction. How much more customers of up to two years lean towards
switching is set so that their share matches the survey too, whatever the world's tenure mix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipelines.simulation.behaviour import Traits

SURVEY_SHARE = 0.20
ADULT_AGE = 18
YOUNG_AGES = (18, 29)
UP_TO_TWO_YEARS_DAYS = 730
# Share answering 5 (very satisfied) … 1 (very dissatisfied).
SATISFACTION_SHARES = {5: 0.45, 4: 0.33, 3: 0.12, 2: 0.06, 1: 0.04}
SWITCHING_BY_SATISFACTION = {5: 0.04, 4: 0.21, 3: 0.35, 2: 0.67, 1: 0.73}
SWITCHING_UP_TO_TWO_YEARS = 0.25
EVALUATES_ALL = 0.45
EVALUATES_YOUNG = 0.80
SHARE_YES = {
    "invoice_only_contact": 0.67,
    "visits_web_monthly": 0.18,
    "amount_often_too_high": 0.32,
    "open_to_better_fitting_offer": 0.60,
    "wants_usage_info_on_invoice": 0.71,
    "fees_could_make_switch": 0.44,
    "worse_when_new_customers_get_better_deals": 0.52,
}
# Bounds and steps of the search for the extra lean of customers of up to two years.
_LEAN_BOUNDS = (-6.0, 6.0)
_LEAN_STEPS = 30


@dataclass(frozen=True)
class Respondents:
    """What the survey draws on, one entry per respondent."""

    traits: Traits
    value_gap: np.ndarray
    tenure_days: np.ndarray
    age: np.ndarray
    months_over_allowance: np.ndarray
    paper_invoice: np.ndarray
    pays_above_new_customers_sek: np.ndarray


@dataclass(frozen=True)
class SurveyAnswers:
    satisfaction: np.ndarray
    answers: dict[str, np.ndarray]


def _top(score: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` highest scores."""
    chosen = np.zeros(len(score), dtype=bool)
    if count > 0:
        chosen[np.argsort(-score, kind="stable")[: min(count, len(score))]] = True
    return chosen


def _top_share(score: np.ndarray, share: float) -> np.ndarray:
    return _top(score, round(share * len(score)))


def _satisfaction(latent: np.ndarray) -> np.ndarray:
    """Levels 1–5 cut from the latent satisfaction at the survey's shares."""
    order = np.argsort(latent, kind="stable")
    levels = np.empty(len(latent), dtype=np.int64)
    edges = np.cumsum([0.0, *(SATISFACTION_SHARES[level] for level in (1, 2, 3, 4, 5))])
    bounds = np.round(edges / edges[-1] * len(latent)).astype(np.int64)
    for level, (low, high) in enumerate(itertools.pairwise(bounds), start=1):
        levels[order[low:high]] = level
    return levels


def _switching(lean: np.ndarray, new_customer: np.ndarray, satisfaction: np.ndarray) -> np.ndarray:
    """Who thinks of switching: the survey's share per satisfaction level, and among customers
    of up to two years, by searching the extra lean those customers have."""

    def answers(extra: float) -> np.ndarray:
        leaning = lean + extra * new_customer
        result = np.zeros(len(lean), dtype=bool)
        for level, share in SWITCHING_BY_SATISFACTION.items():
            group = np.flatnonzero(satisfaction == level)
            result[group] = _top_share(leaning[group], share)
        return result

    low, high = _LEAN_BOUNDS
    if new_customer.all() or not new_customer.any():
        return answers(0.0)
    # The share of new customers who say yes grows with their extra lean: bisect.
    for _ in range(_LEAN_STEPS):
        middle = (low + high) / 2
        if answers(middle)[new_customer].mean() < SWITCHING_UP_TO_TWO_YEARS:
            low = middle
        else:
            high = middle
    return answers((low + high) / 2)


def answer_survey(rng: np.random.Generator, people: Respondents) -> SurveyAnswers:
    """Satisfaction (1–5) and a yes/no per question for every respondent."""
    n = len(people.age)
    t = people.traits

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, n)

    satisfaction = _satisfaction(t.satisfaction - 0.8 * people.value_gap + noise(0.5))
    switching = _switching(
        1.2 * people.value_gap - 0.5 * t.loyalty + noise(1),
        people.tenure_days <= UP_TO_TWO_YEARS_DAYS,
        satisfaction,
    )

    young = (people.age >= YOUNG_AGES[0]) & (people.age <= YOUNG_AGES[1])
    evaluating_lean = 1.5 * t.price_sensitivity + noise(0.5)
    evaluates = np.zeros(n, dtype=bool)
    young_yes = round(EVALUATES_YOUNG * young.sum())
    evaluates[young] = _top(evaluating_lean[young], young_yes)
    evaluates[~young] = _top(evaluating_lean[~young], round(EVALUATES_ALL * n) - young_yes)

    leans = {
        "invoice_only_contact": -2.0 * t.digital_engagement + noise(0.5),
        "visits_web_monthly": 2.0 * t.digital_engagement + noise(0.5),
        "amount_often_too_high": people.value_gap
        + 0.8 * t.price_sensitivity
        + 0.3 * people.months_over_allowance
        + noise(0.7),
        "open_to_better_fitting_offer": t.openness + noise(0.7),
        "wants_usage_info_on_invoice": 0.5 * t.openness
        + 0.4 * people.months_over_allowance
        + noise(1.0),
        "fees_could_make_switch": 2.0 * t.fee_sensitivity + 0.5 * people.paper_invoice + noise(0.6),
        "worse_when_new_customers_get_better_deals": 2.0 * t.fairness_sensitivity
        + 0.01 * people.pays_above_new_customers_sek
        + noise(0.6),
    }
    answers = {
        question: _top_share(leans[question], share) for question, share in SHARE_YES.items()
    }
    answers["thinks_of_switching_at_invoice"] = switching
    answers["evaluates_at_invoice"] = evaluates
    return SurveyAnswers(satisfaction=satisfaction, answers=answers)
