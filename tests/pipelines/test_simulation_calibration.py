"""The simulated population reproduces the survey table of docs/architecture.md.

Every figure is computed from the written survey_responses joined with customers only (age from
birth_year, tenure from signup_date, the satisfaction column), on a world of 50,000 customers,
and must lie within 3 percentage points of the survey's figure. Source: Novus survey for
Billogram, as quoted in the survey table of docs/architecture.md ("The simulated world").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.catalog import load_catalog
from pipelines.simulation.world import simulate

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "offers.yaml"
TOLERANCE_POINTS = 3.0

Subset = Callable[[pd.DataFrame], pd.Series]


@dataclass(frozen=True)
class Figure:
    name: str
    question: str
    percent: float
    source: str
    who: Subset | None = None


def _satisfaction(level: int) -> Subset:
    return lambda r: r["satisfaction"] == level


def _up_to_two_years(r: pd.DataFrame) -> pd.Series:
    return r["tenure_days"] <= 730


def _aged_18_to_29(r: pd.DataFrame) -> pd.Series:
    return r["age"].between(18, 29)


_SWITCHING = (
    "survey table | think of switching when the invoice comes, by satisfaction: very "
    "satisfied → very dissatisfied | 4 %, 21 %, 35 %, 67 %, 73 % |"
)
_EVALUATES = (
    "survey table | evaluate the operator when the invoice comes, all / aged 18–29 | 45 % / 80 % |"
)
FIGURES = (
    Figure(
        "invoice_only_contact",
        "invoice_only_contact",
        67,
        "survey table | invoice is the only contact with the operator | 67 % |",
    ),
    Figure(
        "visits_web_monthly",
        "visits_web_monthly",
        18,
        "survey table | visit the operator's web or app monthly or more | 18 % |",
    ),
    Figure(
        "switching_very_satisfied",
        "thinks_of_switching_at_invoice",
        4,
        _SWITCHING,
        _satisfaction(5),
    ),
    Figure(
        "switching_satisfied", "thinks_of_switching_at_invoice", 21, _SWITCHING, _satisfaction(4)
    ),
    Figure("switching_neutral", "thinks_of_switching_at_invoice", 35, _SWITCHING, _satisfaction(3)),
    Figure(
        "switching_dissatisfied", "thinks_of_switching_at_invoice", 67, _SWITCHING, _satisfaction(2)
    ),
    Figure(
        "switching_very_dissatisfied",
        "thinks_of_switching_at_invoice",
        73,
        _SWITCHING,
        _satisfaction(1),
    ),
    Figure(
        "switching_all",
        "thinks_of_switching_at_invoice",
        20,
        "survey table | think of switching, all / customers of up to 2 years | 20 % / 25 % |",
    ),
    Figure(
        "switching_up_to_two_years",
        "thinks_of_switching_at_invoice",
        25,
        "survey table | think of switching, all / customers of up to 2 years | 20 % / 25 % |",
        _up_to_two_years,
    ),
    Figure(
        "evaluates_all",
        "evaluates_at_invoice",
        45,
        _EVALUATES,
    ),
    Figure(
        "evaluates_aged_18_to_29",
        "evaluates_at_invoice",
        80,
        _EVALUATES,
        _aged_18_to_29,
    ),
    Figure(
        "amount_often_too_high",
        "amount_often_too_high",
        32,
        "survey table | find the invoice amount often too high for the service | 32 % |",
    ),
    Figure(
        "open_to_better_fitting_offer",
        "open_to_better_fitting_offer",
        60,
        "survey table | open to an offer for a contract that fits their usage better, on the "
        "invoice | 60 % |",
    ),
    Figure(
        "wants_usage_info_on_invoice",
        "wants_usage_info_on_invoice",
        71,
        "survey table | want usage, binding period and similar on the invoice | 71 % |",
    ),
    Figure(
        "fees_could_make_switch",
        "fees_could_make_switch",
        44,
        "survey table | invoice fees could make them switch | 44 % |",
    ),
    Figure(
        "worse_when_new_customers_get_better_deals",
        "worse_when_new_customers_get_better_deals",
        52,
        "survey table | think worse of the operator when new customers get better deals | 52 % |",
    ),
)


@pytest.fixture(scope="module")
def respondents(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Survey answers of a 50,000-customer world, joined with the customers table."""
    out = tmp_path_factory.mktemp("calibrated-world")
    simulate(
        customers=50_000,
        months=6,
        seed=2026,
        out=out,
        catalog=load_catalog(CATALOG),
        end_month=dt.date(2026, 11, 1),
    )
    survey = pd.read_parquet(out / "survey_responses.parquet")
    customers = pd.read_parquet(out / "customers.parquet")
    joined = survey.merge(customers, on="customer_id", how="left", validate="one_to_one")
    surveyed = joined["surveyed_at"].dt.tz_convert("UTC")
    surveyed_day = surveyed.dt.tz_localize(None).dt.normalize()
    joined["age"] = surveyed.dt.year - joined["birth_year"]
    joined["tenure_days"] = (surveyed_day - pd.to_datetime(joined["signup_date"])).dt.days
    return joined


def test_the_survey_is_large_and_adult(respondents: pd.DataFrame) -> None:
    # About a fifth of 50,000 customers, all adults, each with a satisfaction answer.
    assert 8_000 <= len(respondents) <= 11_000
    assert respondents["age"].min() >= 18
    assert respondents["satisfaction"].between(1, 5).all()
    # Enough respondents in the smallest group for a 3-point check to mean something.
    assert (respondents["satisfaction"] == 1).sum() >= 300


@pytest.mark.parametrize("figure", FIGURES, ids=[f"{f.name}={f.percent:g}%" for f in FIGURES])
def test_survey_figure_within_three_points(respondents: pd.DataFrame, figure: Figure) -> None:
    """Each figure of the survey table, from the tables alone, within 3 points."""
    rows = respondents if figure.who is None else respondents[figure.who(respondents)]
    assert len(rows) >= 300, f"too few respondents for {figure.name}: {len(rows)}"
    achieved = 100.0 * rows[figure.question].mean()
    assert achieved == pytest.approx(figure.percent, abs=TOLERANCE_POINTS), (
        f"{figure.name}: {achieved:.1f} % from the simulated survey, {figure.percent:g} % in "
        f"the survey ({figure.source})"
    )
