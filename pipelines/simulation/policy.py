"""The historical offer policy whose decisions fill offer_events.

A simple rules policy: eligible offers are scored by a rule (plan fit saving, overage, fees), and
1–3 of them are drawn one rank at a time from a softmax over the scores mixed with a uniform
choice (epsilon), so every eligible offer has a known, non-zero chance. ``propensity`` is the
probability that the policy puts that offer at that rank, given how many offers it shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulation.observables import OfferContext
from pipelines.simulation.offers import ADDON, LOYALTY, PAYMENT_HELP, PLAN, OfferArrays

POLICY_NAME = "rules"
EPSILON = 0.1
SLATE_SIZES = (1, 2, 3)
SLATE_SIZE_SHARES = (0.25, 0.45, 0.30)
MAX_SLATE = max(SLATE_SIZES)
# A declined offer is not shown again at the customer's next decision.
DECLINE_BLOCK_MONTHS = 3
# Payment help that removes the invoice fee, and help for customers who owe money.
FEE_REMOVING_OFFERS = ("PAY_EINVOICE", "PAY_AUTOGIRO")
DEBT_OFFERS = ("PAY_INSTALMENT",)
# Rank-3 propensities sum over pairs of earlier picks; chunking bounds the memory this takes.
_CHUNK = 4096


@dataclass(frozen=True)
class Customers:
    """Per decision: the facts the policy reads beyond the offer context."""

    plan: np.ndarray
    monthly_fee: np.ndarray
    in_binding: np.ndarray
    tenure_months: np.ndarray
    paper_invoice: np.ndarray
    in_collection: np.ndarray
    unpaid_reminders: np.ndarray
    personalised: np.ndarray


def eligible_offers(
    offers: OfferArrays,
    ctx: OfferContext,
    customers: Customers,
    available: np.ndarray,
    declined_recently: np.ndarray,
) -> np.ndarray:
    """``[decision, offer]`` mask of offers the rules allow. ``ctx`` holds every (decision, offer)
    pair in row-major order."""
    decisions, k = available.shape
    kind = offers.kind[None, :]
    ids = np.asarray(offers.offer_ids, dtype=object)
    fee_removing = np.isin(ids, FEE_REMOVING_OFFERS)[None, :]
    debt = np.isin(ids, DEBT_OFFERS)[None, :]
    owes = (customers.in_collection | customers.unpaid_reminders)[:, None]
    good_standing = ~owes

    mask = available & ~declined_recently
    mask &= ~((kind == PLAN) & (np.arange(k)[None, :] == customers.plan[:, None]))
    mask &= customers.tenure_months[:, None] >= offers.min_tenure_months[None, :]
    mask &= ~offers.requires_good_standing[None, :] | good_standing
    mask &= ~customers.in_collection[:, None] | (kind == PAYMENT_HELP)
    mask &= ~fee_removing | customers.paper_invoice[:, None]
    mask &= ~debt | owes
    above_new = ctx.pays_above_new_customers_sek.reshape(decisions, k)
    mask &= (kind != LOYALTY) | (above_new > 0)
    # No cheaper plan while bound to the current one.
    cheaper = offers.monthly_fee[None, :] < customers.monthly_fee[:, None]
    mask &= ~((kind == PLAN) & cheaper & customers.in_binding[:, None])
    return mask


def rule_scores(offers: OfferArrays, ctx: OfferContext, customers: Customers) -> np.ndarray:
    """``[decision, offer]`` rule score. Without profiling the score is the same for everyone."""
    decisions = len(customers.plan)
    k = len(offers)
    kind = offers.kind[ctx.offer]
    adds_allowance = (kind == ADDON) & (
        (np.nan_to_num(offers.data_gb[ctx.offer], nan=1.0) > 0)
        | (np.nan_to_num(offers.roaming_data_gb[ctx.offer], nan=1.0) > 0)
    )
    fit = np.clip(ctx.saving_sek / 30.0, -3.0, 4.0)
    relieves = (ctx.months_over_allowance >= 2) & (
        ctx.current_overage_sek - ctx.offer_overage_sek > 1.0
    )
    personal = np.select(
        [(kind == PLAN) | adds_allowance, kind == LOYALTY, kind == PAYMENT_HELP],
        [fit + 1.0 * relieves, fit, 0.5 + ctx.fees_3m_sek / 30.0],
        default=0.0,
    ).reshape(decisions, k)
    general = np.select(
        [offers.kind == LOYALTY, offers.kind == PAYMENT_HELP], [1.0, 1.0], default=0.0
    )
    scores = np.where(customers.personalised[:, None], personal, general[None, :])
    return np.clip(scores, -5.0, 5.0)


def _pick_probabilities(weights: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Probability of each remaining offer being picked next."""
    w = np.where(remaining, weights, 0.0)
    count = remaining.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (1 - EPSILON) * w / w.sum(axis=1, keepdims=True) + EPSILON / count
    return np.where(remaining, p, 0.0)


def _rank_two(weights: np.ndarray, eligible: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """P(chosen offer at rank 2): summed over every possible first pick."""
    rows = np.arange(len(chosen))
    first = _pick_probabilities(weights, eligible)
    w = np.where(eligible, weights, 0.0)
    total = w.sum(axis=1, keepdims=True)
    count = eligible.sum(axis=1, keepdims=True)
    w_o = w[rows, chosen][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        then = (1 - EPSILON) * w_o / (total - w) + EPSILON / (count - 1)
    others = eligible.copy()
    others[rows, chosen] = False
    return np.where(others, first * then, 0.0).sum(axis=1)


def _rank_three(weights: np.ndarray, eligible: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """P(chosen offer at rank 3): summed over every ordered pair of earlier picks."""
    result = np.empty(len(chosen))
    for start in range(0, len(chosen), _CHUNK):
        part = slice(start, start + _CHUNK)
        e = eligible[part]
        o = chosen[part]
        rows = np.arange(len(o))
        w = np.where(e, weights[part], 0.0)
        total = w.sum(axis=1)[:, None, None]
        count = e.sum(axis=1)[:, None, None]
        first = _pick_probabilities(weights[part], e)[:, :, None]
        wa = w[:, :, None]
        wb = w[:, None, :]
        w_o = w[rows, o][:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            second = (1 - EPSILON) * wb / (total - wa) + EPSILON / (count - 1)
            third = (1 - EPSILON) * w_o / (total - wa - wb) + EPSILON / (count - 2)
        others = e.copy()
        others[rows, o] = False
        k = e.shape[1]
        pairs = others[:, :, None] & others[:, None, :] & ~np.eye(k, dtype=bool)[None]
        result[part] = np.where(pairs, first * second * third, 0.0).sum(axis=(1, 2))
    return result


def choose_slates(
    rng: np.random.Generator, scores: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Offers per ``[decision, rank]`` (-1 where none) and the propensity of each."""
    decisions, _ = scores.shape
    rows = np.arange(decisions)
    size = np.minimum(
        rng.choice(np.array(SLATE_SIZES), size=decisions, p=np.array(SLATE_SIZE_SHARES)),
        eligible.sum(axis=1),
    )
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    chosen = np.full((decisions, MAX_SLATE), -1, dtype=np.int64)
    propensity = np.full((decisions, MAX_SLATE), np.nan)
    remaining = eligible.copy()
    for rank in range(MAX_SLATE):
        picking = size > rank
        p = _pick_probabilities(weights, remaining)
        cumulative = np.cumsum(p, axis=1)
        draw = rng.random(decisions) * cumulative[:, -1]
        pick = np.minimum((cumulative <= draw[:, None]).sum(axis=1), p.shape[1] - 1)
        # Floating error can land past the last remaining offer; step back to it.
        last_remaining = p.shape[1] - 1 - np.argmax(remaining[:, ::-1], axis=1)
        pick = np.where(remaining[rows, pick], pick, last_remaining)
        chosen[picking, rank] = pick[picking]
        remaining[rows[picking], pick[picking]] = False
        if rank == 0:
            propensity[picking, 0] = p[rows, pick][picking]
    second = size >= 2
    propensity[second, 1] = _rank_two(weights[second], eligible[second], chosen[second, 1])
    third = size >= 3
    propensity[third, 2] = _rank_three(weights[third], eligible[third], chosen[third, 2])
    # A sure pick sums to 1 plus rounding error; a probability stays within (0, 1].
    return chosen, np.minimum(propensity, 1.0)
