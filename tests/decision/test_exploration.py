"""Exploration: a fixed share of model decisions shows a random order, logging true propensities."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from serving.decision.arbitration import BELOW_ACCEPTANCE_FLOOR, DEFAULT_OBJECTIVE, cut
from serving.decision.engine import Decision, decide
from serving.decision.exploration import choose_slate, explores
from tests.factories.decision import (
    FakeFeatureSource,
    FakeScorer,
    heavy_user,
    make_catalog,
    request,
)

WEIGHTS = [40.0, 30.0, 20.0, 10.0]
KINDS = ["plan", "plan", "addon", "loyalty"]
ALL = [True] * len(WEIGHTS)


def test_the_greedy_slate_is_the_ranking_cut_with_certain_propensities() -> None:
    slate = choose_slate(
        WEIGHTS, KINDS, 3, greedy_allowed=ALL, explore=False, share=0.0, invoice_id="INV-1"
    )
    assert list(slate.items) == cut([0, 1, 2, 3], 3, lambda i: KINDS[i]) == [0, 2, 3]
    assert slate.propensities == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("tolerance", "order"),
    [(0.0, [0, 2, 3]), (0.24, [0, 2, 3]), (0.25, [1, 2, 3]), (0.49, [1, 2, 3]), (0.5, [1, 3, 2])],
)
def test_a_likelier_offer_within_the_tolerance_leads(tolerance: float, order: list[int]) -> None:
    # Item 1 (30) is within 25 % of item 0 (40) and likelier: from a tolerance of 0.25 it leads,
    # and the one plan it is closes item 0. Item 3 (10) is within 50 % of item 2 (20) and
    # likelier: from 0.5 it comes before it. Each edge is inclusive.
    slate = choose_slate(
        WEIGHTS,
        KINDS,
        3,
        greedy_allowed=ALL,
        explore=False,
        share=0.0,
        invoice_id="INV-1",
        acceptance=[0.1, 0.3, 0.2, 0.25],
        tolerance=tolerance,
    )
    assert list(slate.items) == order
    assert slate.propensities == (1.0, 1.0, 1.0)


def test_the_tolerance_edge_holds_for_values_in_ore() -> None:
    # 0.7 × 8.30 is 5.8100000000000005 in floating point; 5.81 SEK is 70 % of 8.30 SEK.
    order = choose_slate(
        [8.30, 5.81, 5.80],
        ["addon", "addon", "addon"],
        3,
        greedy_allowed=[True] * 3,
        explore=False,
        share=0.0,
        invoice_id="INV-1",
        acceptance=[0.1, 0.3, 0.5],
        tolerance=0.3,
    ).items
    # 5.81 is within 30 % of 8.30 and likelier: it leads. 5.80, the likeliest, is not within it,
    # so 8.30 comes next, and 5.80 last.
    assert list(order) == [1, 0, 2]


def test_a_greedy_slate_under_exploration_logs_the_mixture() -> None:
    slate = choose_slate(
        WEIGHTS, KINDS, 3, greedy_allowed=ALL, explore=False, share=0.1, invoice_id="INV-1"
    )
    # First: 0.9 × 1 + 0.1 × 40/100. Second, given item 0 first (plans closed): greedy keeps
    # 0.9, random 0.1 × 0.4 × 20/30; conditional = (0.9 + 0.0267) / (0.9 + 0.04).
    first = 0.9 + 0.1 * 0.4
    second = (0.9 + 0.1 * 0.4 * 20 / 30) / first
    assert slate.propensities[0] == pytest.approx(first, abs=1e-6)
    assert slate.propensities[1] == pytest.approx(second, abs=1e-6)


def test_logged_propensities_are_the_frequencies_of_what_is_shown() -> None:
    share, counts, logged = 0.3, Counter[int](), {}
    invoices = [f"INV-{n}" for n in range(20_000)]
    for invoice in invoices:
        slate = choose_slate(
            WEIGHTS,
            KINDS,
            3,
            greedy_allowed=ALL,
            explore=explores(invoice, share),
            share=share,
            invoice_id=invoice,
        )
        counts[slate.items[0]] += 1
        logged[slate.items[0]] = slate.propensities[0]
        assert sum(KINDS[i] == "plan" for i in slate.items) <= 1
    for item, propensity in logged.items():
        assert counts[item] / len(invoices) == pytest.approx(propensity, abs=0.012), item
    explored = sum(explores(invoice, share) for invoice in invoices) / len(invoices)
    assert explored == pytest.approx(share, abs=0.012)


def test_the_same_invoice_always_gets_the_same_draw() -> None:
    runs = {
        choose_slate(
            WEIGHTS, KINDS, 3, greedy_allowed=ALL, explore=True, share=0.5, invoice_id="INV-7"
        )
        for _ in range(5)
    }
    assert len(runs) == 1
    assert not explores("INV-7", 0.0)


CATALOG = make_catalog()
ACCEPTANCE = {"PLAN_15GB": 0.30, "ADDON_DATA_10GB": 0.40, "LOYALTY_NEW_PRICE": 0.50}


def _decision(invoice_id: str, share: float) -> Decision:
    return decide(
        request(invoice_id=invoice_id, max_offers=3),
        FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0)),
        CATALOG,
        policy="model",
        scorer=FakeScorer(CATALOG, ACCEPTANCE, churn=0.5, default=0.01),
        recently_declined=frozenset(),
        objective=replace(DEFAULT_OBJECTIVE, exploration_share=share),
    )


def test_an_exploring_decision_shows_offers_below_the_floor_and_logs_so() -> None:
    invoice = next(f"INV-{n}" for n in range(1_000) if explores(f"INV-{n}", 0.5))
    greedy = _decision(invoice, 0.0)
    explored = _decision(invoice, 0.5)
    assert not greedy.explored and explored.explored
    assert explored.to_log_dict()["explored"] is True
    below = {r.offer_id for r in greedy.candidates if r.blocked_by == BELOW_ACCEPTANCE_FLOOR}
    assert below  # offers at 1 % acceptance
    shown_below = [o.offer_id for o in explored.offers if o.offer_id in below]
    tried = [_decision(f"INV-{n}", 0.5) for n in range(300) if explores(f"INV-{n}", 0.5)]
    shown_below += [o.offer_id for d in tried for o in d.offers if o.offer_id in below]
    assert shown_below  # exploration reaches offers the greedy policy never shows
    for decision in tried:
        assert all(0.0 < o.propensity <= 1.0 for o in decision.offers)
        # Offers of no value to anyone are never explored.
        blocked = {r.offer_id: r.blocked_by for r in decision.candidates}
        assert all(blocked[o.offer_id] is None for o in decision.offers)


def test_without_exploration_every_shown_offer_is_certain() -> None:
    decision = _decision("INV-1", 0.0)
    assert [o.propensity for o in decision.offers] == [1.0] * len(decision.offers)
