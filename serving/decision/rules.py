"""Policies without a model: the rules policy and the non-personalised offer list.

Rules (no model yet, or an experiment's rules arm): help with a debt first, then the best plan fit
(highest monthly saving first), then upgrades the customer's usage justifies (the smallest extra
cost first). Offers that neither save money nor answer usage (a plain upsell) are left to the model.

Non-personalised (no profiling consent, or possibly under 18): one fixed list per segment, the same
for everyone in it: loyalty and payment-help offers in catalog order, then the segment's featured
plan. Contract and billing facts still decide who may get what (eligibility, and the guardrails:
no dearer plan or add-on, and no plan that includes less than the customer's, since only usage
could justify either); usage never does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.catalog import Catalog, Offer
from serving.decision.candidates import Candidate, is_debt_help
from serving.decision.guardrails import is_upgrade
from serving.decision.inputs import Account

FEATURED_PLANS: Mapping[str, str] = {"consumer": "PLAN_15GB", "business": "PLAN_30GB"}


def _rules_key(candidate: Candidate, account: Account) -> tuple[int, float, str] | None:
    offer = candidate.offer
    saving = candidate.saving_sek or 0.0
    if is_debt_help(offer):
        return (0, 0.0, offer.offer_id)
    if saving > 0:
        return (1, -saving, offer.offer_id)
    if is_upgrade(offer, account):
        # Guardrails already removed upgrades usage does not justify.
        return (2, -saving, offer.offer_id)
    return None


def rules_order(candidates: Sequence[Candidate], account: Account) -> list[Candidate]:
    """The rules policy's ranking of guardrail-checked candidates (see the module text)."""
    keyed = [(key, c) for c in candidates if (key := _rules_key(c, account)) is not None]
    return [candidate for _, candidate in sorted(keyed, key=lambda pair: pair[0])]


def non_personalised_offers(
    catalog: Catalog, segment: str, featured_plans: Mapping[str, str] = FEATURED_PLANS
) -> list[Offer]:
    """The segment's fixed offer list, before eligibility."""
    offers = [o for o in catalog.offers if o.kind == "loyalty"]
    offers += [o for o in catalog.offers if o.kind == "payment_help"]
    featured = catalog.by_id().get(featured_plans.get(segment, ""))
    if featured is not None and featured.kind == "plan":
        offers.append(featured)
    return offers
