"""Exploration: a small share of model decisions shows a randomised order, with true propensities.

A policy that only ever shows its own first choice produces logs that cannot evaluate another
policy, and a model retrained on them learns only from its own choices. So a configurable share
of the model's decisions (``Objective.exploration_share``) picks the shown offers at random, each
pick with probability proportional to its acceptance × value among the offers still open to it
(Plackett–Luce), inside consent, eligibility, the guardrails and the one-plan rule; the
acceptance floors are lifted in such a decision so that offers the model rates low get shown and
learned from, while offers of no value never are.

Whether an invoice explores, and the draw, come from a hash of its invoice id: the API, a replay
and the batch run give the same decision for the same invoice. Each shown offer logs its true
propensity: the probability, under the mixture of "greedy with 1 − share" and "random with
share", that it was picked at its position given the offers above it. The first offer's is its
marginal probability of leading the invoice, which off-policy evaluation divides by.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _unit_draws(invoice_id: str, count: int) -> np.ndarray:
    """``count`` uniform numbers in [0, 1) fixed by the invoice id."""
    digest = hashlib.blake2b(f"explore:{invoice_id}".encode(), digest_size=16).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "big"))
    return rng.random(count)


def explores(invoice_id: str, share: float) -> bool:
    """Whether this invoice's decision explores (a fixed draw per invoice id).

    Every model decision asks, so the draw is the hash itself, not a generator seeded by it.
    """
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"explores:{invoice_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


@dataclass(frozen=True)
class Slate:
    """The shown items in order, and each one's propensity at its position."""

    items: tuple[int, ...]
    propensities: tuple[float, ...]


def _open(pool: Sequence[int], picked: Sequence[int], kinds: Sequence[str]) -> list[int]:
    """Items still open after ``picked``: not picked, and no second plan (one plan at most)."""
    has_plan = any(kinds[i] == "plan" for i in picked)
    return [i for i in pool if i not in picked and not (has_plan and kinds[i] == "plan")]


# Values are in SEK rounded to öre: (1 − 0.3) × 8.30 is 5.8100000000000005 in binary floating
# point, and 5.81 must count as within the tolerance (its edge is inclusive).
_EDGE = 1e-9


def _tolerance_floor(best: float, tolerance: float) -> float:
    """The lowest weight within ``tolerance`` of ``best``, inclusive."""
    return (1.0 - tolerance) * best - _EDGE * max(1.0, abs(best))


def greedy_order(
    weights: Sequence[float],
    kinds: Sequence[str],
    allowed: Sequence[bool],
    size: int,
    acceptance: Sequence[float] | None = None,
    tolerance: float = 0.0,
) -> list[int]:
    """The greedy order: at each place, among the open items whose weight is within
    ``tolerance`` of the highest open weight, the likeliest (``acceptance``); without
    acceptances or tolerance, the highest weight."""
    order: list[int] = []
    pool = [i for i in range(len(weights)) if allowed[i]]
    while len(order) < size:
        open_items = _open(pool, order, kinds)
        if not open_items:
            break
        # Highest weight first; the lower index (the caller's tie order) breaks ties.
        best = max(open_items, key=lambda i: (weights[i], -i))
        if acceptance is not None and tolerance > 0:
            floor = _tolerance_floor(weights[best], tolerance)
            within = [i for i in open_items if weights[i] >= floor]
            best = max(within, key=lambda i: (acceptance[i], weights[i], -i))
        order.append(best)
    return order


def _random_pick_probability(
    item: int, picked: Sequence[int], weights: Sequence[float], kinds: Sequence[str]
) -> float:
    open_items = _open(range(len(weights)), picked, kinds)
    total = sum(weights[i] for i in open_items)
    return weights[item] / total if item in open_items and total > 0 else 0.0


def choose_slate(
    weights: Sequence[float],
    kinds: Sequence[str],
    size: int,
    *,
    greedy_allowed: Sequence[bool],
    explore: bool,
    share: float,
    invoice_id: str,
    acceptance: Sequence[float] | None = None,
    tolerance: float = 0.0,
) -> Slate:
    """Pick up to ``size`` items: greedily by weight among ``greedy_allowed`` (within
    ``tolerance`` of the best weight, the likeliest by ``acceptance`` first), or (``explore``)
    among all at random ∝ weight.

    Items come in the greedy order's tie order (equal weights: the earlier first); ``weights``
    must be positive. The propensities are those of the mixture the caller draws from: greedy
    with probability ``1 − share``, random with ``share``.
    """
    greedy = greedy_order(weights, kinds, greedy_allowed, size, acceptance, tolerance)
    if explore:
        draws = _unit_draws(invoice_id, size + 1)[1:]
        items: list[int] = []
        while len(items) < size:
            open_items = _open(range(len(weights)), items, kinds)
            if not open_items:
                break
            cumulative = np.cumsum([weights[i] for i in open_items])
            at = float(draws[len(items)]) * float(cumulative[-1])
            items.append(open_items[int(np.searchsorted(cumulative, at, side="right"))])
    else:
        items = greedy
    propensities = []
    greedy_prefix = 1.0 - share  # P(greedy and greedy's order matches the shown prefix)
    random_prefix = share  # P(random and the random draw gave the shown prefix)
    for position, item in enumerate(items):
        greedy_next = greedy_prefix * (position < len(greedy) and greedy[position] == item)
        random_next = random_prefix * _random_pick_probability(
            item, items[:position], weights, kinds
        )
        before = greedy_prefix + random_prefix
        propensities.append(round((greedy_next + random_next) / before, 6) if before else 0.0)
        greedy_prefix, random_prefix = greedy_next, random_next
    return Slate(tuple(items), tuple(propensities))
