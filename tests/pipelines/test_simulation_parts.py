"""Parts of the simulator on their own: the logging policy, hidden behaviour, billing, calendar."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.calendar import add_months, age_in_year, months_between
from core.catalog import load_catalog
from pipelines.simulation import policy
from pipelines.simulation.behaviour import (
    PROFILES,
    Behaviour,
    Traits,
    acceptance_probability,
    behaviour_for,
)
from pipelines.simulation.billing import INVOICE_FEE_SEK, REMINDER_FEE_SEK, PaymentLedger
from pipelines.simulation.observables import OfferContext
from pipelines.simulation.offers import OfferArrays
from pipelines.simulation.survey import SATISFACTION_SHARES, _satisfaction
from pipelines.simulation.timeline import Timeline

CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "offers.yaml"


@pytest.fixture(scope="module")
def offers() -> OfferArrays:
    return OfferArrays.from_catalog(load_catalog(CATALOG))


def _days(*values: str) -> np.ndarray:
    return np.array(values, dtype="datetime64[D]")


# -- the logging policy ---------------------------------------------------------------------


def _enumerated_propensities(scores: np.ndarray, eligible: np.ndarray, size: int) -> np.ndarray:
    """P(offer at rank) by walking every ordered slate, for a single decision."""
    weights = np.exp(scores - scores.max())
    result = np.zeros((len(scores), size))
    candidates = np.flatnonzero(eligible)
    for slate in itertools.permutations(candidates, size):
        probability = 1.0
        remaining = set(candidates)
        for offer in slate:
            pool = np.array(sorted(remaining))
            share = weights[offer] / weights[pool].sum()
            probability *= (1 - policy.EPSILON) * share + policy.EPSILON / len(pool)
            remaining.remove(offer)
        for rank, offer in enumerate(slate):
            result[offer, rank] += probability
    return result


def test_propensities_are_the_exact_chance_of_each_offer_at_its_rank() -> None:
    rng = np.random.default_rng(3)
    scores = np.array([[2.0, -1.0, 0.5, 3.0, 0.0, 1.0]])
    eligible = np.array([[True, True, False, True, True, True]])
    exact = _enumerated_propensities(scores[0], eligible[0], 3)
    # Every rank is a full probability distribution over the eligible offers.
    np.testing.assert_allclose(exact.sum(axis=0), 1.0)
    for _ in range(30):
        chosen, propensity = policy.choose_slates(rng, scores, eligible)
        for rank in range(3):
            if chosen[0, rank] >= 0:
                assert propensity[0, rank] == pytest.approx(exact[chosen[0, rank], rank], abs=1e-12)


def test_sampled_slates_follow_the_propensities() -> None:
    rng = np.random.default_rng(4)
    draws = 40_000
    scores = np.tile([1.0, 0.0, -2.0, 2.5], (draws, 1))
    eligible = np.ones_like(scores, dtype=bool)
    chosen, _ = policy.choose_slates(rng, scores, eligible)
    exact = _enumerated_propensities(scores[0], eligible[0], 3)
    for rank in range(3):
        shown = chosen[:, rank] >= 0
        frequency = np.bincount(chosen[shown, rank], minlength=4) / shown.sum()
        np.testing.assert_allclose(frequency, exact[:, rank], atol=0.01)
    sizes = (chosen >= 0).sum(axis=1)
    assert np.bincount(sizes)[1:] / draws == pytest.approx(policy.SLATE_SIZE_SHARES, abs=0.01)


def test_policy_never_shows_an_ineligible_offer_and_stays_within_zero_and_one() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(0, 3, (2_000, 15))
    eligible = rng.random((2_000, 15)) < 0.3
    chosen, propensity = policy.choose_slates(rng, scores, eligible)
    rows, ranks = np.nonzero(chosen >= 0)
    assert eligible[rows, chosen[rows, ranks]].all()
    assert ((propensity[rows, ranks] > 0) & (propensity[rows, ranks] <= 1)).all()
    assert (
        (chosen >= 0).sum(axis=1) == np.minimum(eligible.sum(axis=1), (chosen >= 0).sum(axis=1))
    ).all()
    assert (chosen[~eligible.any(axis=1)] == -1).all()


def _context(offers: OfferArrays, decisions: int, **values: float) -> OfferContext:
    k = len(offers)
    n = decisions * k
    defaults = {
        "saving_sek": 0.0,
        "current_overage_sek": 0.0,
        "offer_overage_sek": 0.0,
        "months_over_allowance": 0,
        "fees_3m_sek": 0.0,
        "reminder_fees_3m_sek": 0.0,
        "paper_invoice": False,
        "tenure_months": 36,
        "age": 40,
        "in_binding": False,
        "pays_above_new_customers_sek": 0.0,
    }
    defaults.update(values)
    return OfferContext(
        customer=np.repeat(np.arange(decisions), k),
        offer=np.tile(np.arange(k), decisions),
        **{name: np.full(n, value) for name, value in defaults.items()},
    )


def _customers(offers: OfferArrays, **values: object) -> policy.Customers:
    base = {
        "plan": np.array([offers.index("PLAN_5GB")]),
        "monthly_fee": np.array([179.0]),
        "in_binding": np.array([False]),
        "tenure_months": np.array([36]),
        "paper_invoice": np.array([False]),
        "in_collection": np.array([False]),
        "unpaid_reminders": np.array([False]),
        "personalised": np.array([True]),
    }
    base.update({name: np.array([value]) for name, value in values.items()})
    return policy.Customers(**base)  # type: ignore[arg-type]


def _eligible_ids(offers: OfferArrays, customers: policy.Customers, **ctx: float) -> set[str]:
    available = np.ones((1, len(offers)), dtype=bool)
    available[0, offers.index("PLAN_10GB_LEGACY")] = False
    declined = np.zeros((1, len(offers)), dtype=bool)
    mask = policy.eligible_offers(
        offers, _context(offers, 1, **ctx), customers, available, declined
    )
    return {offers.offer_ids[i] for i in np.flatnonzero(mask[0])}


def test_customers_in_collection_get_payment_help_only(offers: OfferArrays) -> None:
    shown = _eligible_ids(offers, _customers(offers, in_collection=True, paper_invoice=True))
    assert shown == {"PAY_EINVOICE", "PAY_AUTOGIRO", "PAY_INSTALMENT"}


def test_eligibility_follows_the_rules(offers: OfferArrays) -> None:
    shown = _eligible_ids(offers, _customers(offers))
    assert "PLAN_5GB" not in shown  # the plan they have
    assert "PLAN_15GB" in shown and "PLAN_1GB" in shown
    assert not shown & {"PAY_EINVOICE", "PAY_AUTOGIRO", "PAY_INSTALMENT"}  # no fee, no debt
    assert "LOYALTY_NEW_PRICE" not in shown  # pays no more than new customers
    loyal = _eligible_ids(offers, _customers(offers), pays_above_new_customers_sek=30.0)
    assert "LOYALTY_NEW_PRICE" in loyal
    bound = _eligible_ids(offers, _customers(offers, in_binding=True))
    assert "PLAN_1GB" not in bound and "PLAN_15GB" in bound  # no cheaper plan while bound
    new = _eligible_ids(offers, _customers(offers, tenure_months=2))
    assert "ADDON_EXTRA_SIM" not in new  # six months' tenure first


# -- hidden behaviour ------------------------------------------------------------------------


def _traits(n: int) -> Traits:
    half = np.full(n, 0.5)
    zero = np.zeros(n)
    return Traits(half, half, zero, zero, zero, half, half, np.full(n, 0.02), np.full(n, 0.1))


def _plan_context(offers: OfferArrays, **values: float) -> OfferContext:
    ctx = _context(offers, 1, **values)
    plan = np.array([offers.index("PLAN_15GB")])
    return ctx.take(plan)


def test_acceptance_rises_with_saving_and_overage_and_falls_with_unfair_prices(
    offers: OfferArrays,
) -> None:
    traits = _traits(1)

    def p(**values: float) -> float:
        return float(acceptance_probability(_plan_context(offers, **values), traits, offers)[0])

    base = p()
    assert p(saving_sek=60.0) > 2 * base
    assert p(saving_sek=-60.0) < base / 2
    relief = {"current_overage_sek": 80.0, "offer_overage_sek": 0.0}
    assert p(months_over_allowance=3, **relief) > p(months_over_allowance=0, **relief)
    assert p(pays_above_new_customers_sek=30.0) < base
    assert p(in_binding=True) < base
    assert 0 < base < 0.1


def test_payment_help_appeals_to_those_paying_fees(offers: OfferArrays) -> None:
    traits = _traits(1)
    einvoice = np.array([offers.index("PAY_EINVOICE")])

    def p(**values: float) -> float:
        ctx = _context(offers, 1, **values).take(einvoice)
        return float(acceptance_probability(ctx, traits, offers)[0])

    assert p(fees_3m_sek=3 * INVOICE_FEE_SEK + REMINDER_FEE_SEK) > 3 * p(fees_3m_sek=0.0)


def test_behaviour_profiles_vary_with_the_seed_and_stay_the_same_for_one_seed() -> None:
    assert behaviour_for("price", 7) == behaviour_for("price", 7)
    assert behaviour_for("price", 7) != behaviour_for("price", 8)
    varied = behaviour_for("habit", 3)
    assert varied.profile == "habit"
    assert varied.saving != PROFILES["habit"].saving
    # Within a few spreads of the profile, so a seed never turns one profile into another.
    assert 0.3 < varied.saving / PROFILES["habit"].saving < 3.0
    with pytest.raises(ValueError, match=r"unknown behaviour profile 'thrift'.*habit"):
        behaviour_for("thrift", 1)


def test_behaviour_is_written_beside_the_ground_truth(tmp_path: Path) -> None:
    written = behaviour_for("needs", 11)
    written.write(tmp_path)
    assert Behaviour.read(tmp_path) == written
    assert Behaviour.read(tmp_path / "older-world") == PROFILES["price"]


def test_profiles_differ_in_what_drives_acceptance(offers: OfferArrays) -> None:
    traits = _traits(1)

    def p(profile: str, offer_id: str, traveller: float = 0.1, **values: float) -> float:
        ctx = _context(offers, 1, **values).take(np.array([offers.index(offer_id)]))
        who = replace(traits, travel=np.full(1, traveller))
        return float(acceptance_probability(ctx, who, offers, PROFILES[profile])[0])

    # Price: a saving of 60 kr multiplies acceptance; habit barely notices it.
    assert p("price", "PLAN_15GB", saving_sek=60.0) > 3 * p("price", "PLAN_15GB")
    assert p("habit", "PLAN_15GB", saving_sek=60.0) < 1.5 * p("habit", "PLAN_15GB")
    # Needs: a traveller takes roaming data far more readily than in a world driven by price.
    travel_ratio = {
        profile: p(profile, "ADDON_EU_ROAMING", traveller=0.6)
        / p(profile, "ADDON_EU_ROAMING", traveller=0.05)
        for profile in ("price", "needs")
    }
    assert travel_ratio["price"] == pytest.approx(1.0)
    assert travel_ratio["needs"] > 5.0
    # Habit: a loyalty price draws a long-standing customer in even without a price gap.
    assert p("habit", "LOYALTY_NEW_PRICE", tenure_months=84) > 2 * p(
        "price", "LOYALTY_NEW_PRICE", tenure_months=84
    )


# -- billing ---------------------------------------------------------------------------------


def test_invoices_charge_fees_and_reminders_and_hide_the_future() -> None:
    rng = np.random.default_rng(8)
    ledger = PaymentLedger(4, np.array([0.0, 1.0, 1.0, 0.0]))
    customers = np.arange(4)
    paper = np.array([True, False, True, False])
    dates = _days("2026-01-10", "2026-01-10", "2026-01-10", "2026-01-10")
    first = ledger.issue(
        rng, customers, dates, np.full(4, 100.0), paper, np.datetime64("2026-12-31")
    )
    np.testing.assert_array_equal(first.invoice_fee_sek, [INVOICE_FEE_SEK, 0, INVOICE_FEE_SEK, 0])
    np.testing.assert_array_equal(first.amount_sek, 100.0 + first.invoice_fee_sek)
    np.testing.assert_array_equal(first.due_date, dates + np.timedelta64(30, "D"))
    assert first.reminders[0] == 0 and first.reminders[3] == 0
    # Reminders of the first invoice are charged on the invoice after next.
    second = ledger.issue(
        rng, customers, dates + 31, np.full(4, 100.0), paper, np.datetime64("2026-12-31")
    )
    assert (second.reminder_fee_sek == 0).all()
    third = ledger.issue(
        rng, customers, dates + 59, np.full(4, 100.0), paper, np.datetime64("2026-12-31")
    )
    np.testing.assert_array_equal(third.reminder_fee_sek, REMINDER_FEE_SEK * first.reminders)
    # Seen from the invoice date itself, no payment or reminder is known yet.
    hidden = PaymentLedger(2, np.array([1.0, 1.0])).issue(
        rng, np.arange(2), dates[:2], np.full(2, 100.0), paper[:2], dates[0]
    )
    assert np.isnat(hidden.paid_date).all() and (hidden.reminders == 0).all()
    assert not hidden.sent_to_collection.any()


# -- calendar and survey ---------------------------------------------------------------------


def test_calendar_arithmetic() -> None:
    np.testing.assert_array_equal(
        add_months(_days("2025-01-31", "2024-02-29", "2025-06-15"), np.array([1, 12, 24])),
        _days("2025-02-28", "2025-02-28", "2027-06-15"),
    )
    np.testing.assert_array_equal(
        months_between(
            _days("2024-03-15", "2024-03-15", "2026-01-01"),
            _days("2024-04-14", "2024-04-15", "2025-01-01"),
        ),
        [0, 1, 0],
    )
    assert age_in_year(np.array([2000]), _days("2026-01-01"))[0] == 26
    timeline = Timeline.ending(__import__("datetime").date(2026, 11, 1), 24)
    assert str(timeline.first_day) == "2024-12-01" and str(timeline.last_day) == "2026-11-30"
    assert timeline.days_in(2) == 28  # February 2025


def test_satisfaction_levels_follow_the_survey_shares() -> None:
    latent = np.random.default_rng(9).normal(size=10_000)
    levels = _satisfaction(latent)
    shares = np.bincount(levels, minlength=6)[1:] / len(levels)
    np.testing.assert_allclose(shares, [SATISFACTION_SHARES[level] for level in range(1, 6)])
    # Higher latent satisfaction, higher level.
    assert latent[levels == 5].min() >= latent[levels == 4].max()


def test_traits_take_keeps_fields_aligned() -> None:
    traits = _traits(3)
    picked = replace(traits, loyalty=np.array([1.0, 2.0, 3.0])).take(np.array([2, 0]))
    np.testing.assert_array_equal(picked.loyalty, [3.0, 1.0])
