"""Guardrails no score can override: loyalty fairness and customer benefit.

Each check is a pure predicate that returns the reason code of a block, or ``None``. The codes are
kept in the decision log so a reviewer sees why an offer was not shown.

Loyalty fairness, the rule chosen: an offer with a lower new-customer price is always *shown at*
that price (``fair_price``), never blocked; ``above_new_customer_price`` checks the shown price.
Customer benefit: an upgrade (a plan dearer than today's, or any add-on the customer would pay
for) is shown only when the customer's own usage justifies it: the offer removes overage they paid
in the last three months, or an allowance the offer raises was nearly used (at least 80 % in a
recent month). An add-on that raises no allowance (an extra SIM, a streaming bundle) can therefore
never be justified by usage, whatever it scores: it would be shown only because it earns more. A
plan that is not an upgrade is not shown when it would have cost more than today for the usage
they had. Without profiling, usage may not choose offers, so no upgrade can be justified and none
is shown, and no plan that includes less than today's (less data, voice or roaming data), which
only usage could show to fit.
"""

from __future__ import annotations

import math

from core.catalog import Offer
from serving.decision.inputs import Account

NEARLY_USED_SHARE = 0.8

ABOVE_NEW_CUSTOMER_PRICE = "above_new_customer_price"
UPGRADE_NOT_JUSTIFIED = "upgrade_not_justified"
UPGRADE_WITHOUT_PROFILING = "upgrade_without_profiling"
SMALLER_PLAN_WITHOUT_PROFILING = "smaller_plan_without_profiling"
COSTS_MORE_FOR_USAGE = "costs_more_for_usage"


def fair_price(offer: Offer) -> float:
    """The monthly fee an existing customer is offered: never above the new-customer price."""
    return min(offer.monthly_fee_sek, offer.price_for_new_customers)


def new_customer_price(offer: Offer, account: Account) -> float:
    """What a new customer pays today for what the offer gives (loyalty: the customer's plan)."""
    if offer.kind == "loyalty":
        price = account.current_new_customer_fee_sek
        return account.current_monthly_fee_sek if math.isnan(price) else price
    return offer.price_for_new_customers


def above_new_customer_price(offer: Offer, account: Account, shown_price_sek: float) -> str | None:
    """Loyalty fairness: an existing customer never pays more than a new customer does today."""
    if shown_price_sek > new_customer_price(offer, account) + 1e-9:
        return ABOVE_NEW_CUSTOMER_PRICE
    return None


def adds_data(offer: Offer) -> bool:
    return offer.kind == "addon" and (offer.data_gb is None or offer.data_gb > 0)


def adds_roaming(offer: Offer) -> bool:
    return offer.kind == "addon" and (offer.roaming_data_gb is None or offer.roaming_data_gb > 0)


def is_upgrade(offer: Offer, account: Account) -> bool:
    """A dearer plan than today's, or a paid add-on (every add-on costs on top of the plan)."""
    if offer.kind == "plan":
        return fair_price(offer) > account.current_monthly_fee_sek
    if offer.kind == "addon":
        return fair_price(offer) > 0
    return False


def _nearly_used(max_used: float, allowance: float, share: float) -> bool:
    # NaN allowance is unlimited: it can never be nearly used.
    if math.isnan(allowance) or math.isnan(max_used):
        return False
    return max_used >= share * allowance


def _more(offered: float | None, current: float) -> bool:
    """Offered allowance above the current one; ``None``/NaN mean unlimited."""
    if math.isnan(current):
        return False
    return offered is None or offered > current


def _less(offered: float | None, current: float) -> bool:
    """Offered allowance below the current one; ``None``/NaN mean unlimited."""
    if offered is None:
        return False
    return math.isnan(current) or offered < current


def includes_less(offer: Offer, account: Account) -> bool:
    """A plan that includes less data, voice or roaming data than the customer's plan today."""
    return (
        _less(offer.data_gb, account.current_data_gb)
        or _less(offer.voice_minutes, account.current_voice_minutes)
        or _less(offer.roaming_data_gb, account.current_roaming_data_gb)
    )


def data_nearly_used(account: Account, share: float = NEARLY_USED_SHARE) -> bool:
    return _nearly_used(account.data_gb_max_3m, account.current_data_gb, share)


def roaming_nearly_used(account: Account, share: float = NEARLY_USED_SHARE) -> bool:
    return _nearly_used(account.roaming_data_gb_max_3m, account.current_roaming_data_gb, share)


def raises_data(offer: Offer, account: Account) -> bool:
    """The offer gives more data than the customer has today."""
    if offer.kind == "plan":
        return _more(offer.data_gb, account.current_data_gb)
    return adds_data(offer)


def raises_roaming(offer: Offer, account: Account) -> bool:
    """The offer gives more data abroad than the customer has today."""
    if offer.kind == "plan":
        return _more(offer.roaming_data_gb, account.current_roaming_data_gb)
    return adds_roaming(offer)


def usage_justifies(
    offer: Offer,
    account: Account,
    offer_overage_sek: float,
    current_overage_sek: float,
    nearly_used_share: float = NEARLY_USED_SHARE,
) -> bool:
    """The customer's own usage calls for this upgrade: it removes overage they paid, or raises
    an allowance of which a recent month used at least ``nearly_used_share``."""
    return (
        offer_overage_sek < current_overage_sek
        or (raises_data(offer, account) and data_nearly_used(account, nearly_used_share))
        or (raises_roaming(offer, account) and roaming_nearly_used(account, nearly_used_share))
    )


def customer_benefit(
    offer: Offer,
    account: Account,
    *,
    offer_overage_sek: float | None,
    current_overage_sek: float | None,
    saving_sek: float | None,
    nearly_used_share: float = NEARLY_USED_SHARE,
) -> str | None:
    """Block upgrades usage does not justify, and plans that would cost more for the same usage.

    Without plan fit (a non-personalised decision, where usage may not choose offers) no upgrade
    can be justified, so none is shown; nor a plan that includes less than today's, which only
    usage could show to fit (a heavy user offered a smaller plan would pay for it in overage).
    """
    upgrade = is_upgrade(offer, account)
    if offer_overage_sek is None or current_overage_sek is None:
        if upgrade:
            return UPGRADE_WITHOUT_PROFILING
        if offer.kind == "plan" and includes_less(offer, account):
            return SMALLER_PLAN_WITHOUT_PROFILING
        return None
    if upgrade:
        if not usage_justifies(
            offer, account, offer_overage_sek, current_overage_sek, nearly_used_share
        ):
            return UPGRADE_NOT_JUSTIFIED
        return None
    if offer.kind == "plan" and saving_sek is not None and saving_sek < 0:
        return COSTS_MORE_FOR_USAGE
    return None
