"""Why an offer is shown: short sentences in Swedish or English from customer-facing facts.

Only facts the customer can check on their own invoices appear: their usage against what the
plan includes, what they paid for overage, the plan-fit saving, fees, prices and binding periods.
Never age, region, scores or anything else about the person. The model's contributions only
order the facts (the fact whose features weighed most comes first); they add no text.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from serving.decision.candidates import Candidate, is_debt_help
from serving.decision.guardrails import (
    data_nearly_used,
    raises_data,
    raises_roaming,
    roaming_nearly_used,
)
from serving.decision.inputs import Account, Locale, as_float
from serving.decision.scoring import Contribution

MAX_REASONS = 3
NBSP = "\u00a0"  # Swedish thousands separator: no line break inside a number


@dataclass(frozen=True)
class Reason:
    code: str
    text: str


def _half_up(value: float, decimals: int) -> float:
    # Money and usage round half up, as a reader rounds; Python's round() rounds half to even.
    scale = 10**decimals
    return math.copysign(math.floor(abs(value) * scale + 0.5) / scale, value)


def format_number(value: float, locale: Locale, decimals: int = 0) -> str:
    """``1 234,5`` in Swedish (non-breaking space, decimal comma), ``1,234.5`` in English."""
    text = f"{_half_up(value, decimals):,.{decimals}f}"
    if locale == "sv":
        return text.replace(",", NBSP).replace(".", ",")
    return text


def format_amount(value: float, locale: Locale, decimals: int = 1) -> str:
    """A quantity with ``decimals`` decimals, none when whole: ``10``, ``14,2``."""
    rounded = _half_up(value, decimals)
    return format_number(rounded, locale, 0 if rounded == int(rounded) else decimals)


def format_sek(value: float, locale: Locale, *, whole: bool = True) -> str:
    """``1 234 kr`` / ``SEK 1,234``; with ``whole=False`` öre show when there are any."""
    if whole:
        number = format_number(value, locale, 0)
    else:
        rounded = _half_up(value, 2)
        number = format_number(rounded, locale, 0 if rounded == int(rounded) else 2)
    return f"{number} kr" if locale == "sv" else f"SEK {number}"


def format_gb(value: float, locale: Locale) -> str:
    return f"{format_amount(value, locale, 1)} GB"


_TEXT: dict[str, tuple[str, str]] = {
    "plan_fit_saving": (
        "Med {title} hade du betalat {sek} mindre per månad de senaste tre månaderna.",
        "With {title} you would have paid {sek} less a month over the last three months.",
    ),
    "usage_above_allowance": (
        "Du har i snitt använt {used} av {included}.",
        "On average you have used {used} of your {included}.",
    ),
    "usage_near_allowance": (
        "Du har i snitt använt {used} av {included}.",
        "On average you have used {used} of your {included}.",
    ),
    "roaming_usage": (
        "Du har i snitt surfat {used} i utlandet av {included} som ingår.",
        "On average you have used {used} of data abroad, of {included} included.",
    ),
    "overage_paid": (
        "Du har i snitt betalat {sek} per månad för användning utöver det som ingår.",
        "You have paid {sek} a month on average for usage beyond what your plan includes.",
    ),
    "loyalty_price": (
        "Du får samma pris som nya kunder: {price} per månad i stället för {current}.",
        "You get the price new customers pay: {price} a month instead of {current}.",
    ),
    "new_customer_price": (
        "Samma pris som för nya kunder: {price} per månad.",
        "The same price new customers pay: {price} a month.",
    ),
    "invoice_fee_avoided": (
        "Slipp fakturaavgiften på {sek}.",
        "Avoid the invoice fee of {sek}.",
    ),
    "payment_support": (
        "Dela upp det du är skyldig i mindre delbetalningar.",
        "Pay what you owe in smaller instalments.",
    ),
    "binding_ends": (
        "Din bindningstid slutar {date}.",
        "Your binding period ends {date}.",
    ),
    "offer_binding": (
        "{title} har {months} månaders bindningstid.",
        "{title} comes with a {months}-month binding period.",
    ),
    "offer_price": (
        "{title} för {price} per månad.",
        "{title} for {price} a month.",
    ),
    # Not "for all": contract and billing facts still decide who may get it (payment help only
    # for a fee or a debt, a plan only when it includes what the customer's plan does).
    "generic_offer_consumer": (
        "Ett erbjudande vi ger privatkunder, inte valt utifrån din användning.",
        "An offer we make to consumer customers, not chosen from your usage.",
    ),
    "generic_offer_business": (
        "Ett erbjudande vi ger företagskunder, inte valt utifrån er användning.",
        "An offer we make to business customers, not chosen from your usage.",
    ),
}

# The model features behind each fact, to order facts by what weighed most in the score.
_REASON_FEATURES: dict[str, frozenset[str]] = {
    "plan_fit_saving": frozenset(
        {
            "fit_saving_sek_per_month",
            "fit_offer_cost_sek_per_month",
            "fit_current_cost_sek_per_month",
        }
    ),
    "usage_above_allowance": frozenset(
        {
            "data_gb_avg_3m",
            "data_gb_max_3m",
            "data_gb_m1",
            "data_gb_m2",
            "data_gb_m3",
            "data_gb_trend_6m",
            "current_data_gb",
            "fit_data_allowance_used",
            "months_over_allowance_6m",
        }
    ),
    "roaming_usage": frozenset(
        {"roaming_data_gb_avg_3m", "roaming_data_gb_max_3m", "roaming_days_6m"}
    ),
    "overage_paid": frozenset(
        {
            "overage_sek_avg_3m",
            "overage_sek_m1",
            "overage_sek_m2",
            "overage_sek_m3",
            "fit_current_overage_sek_per_month",
            "fit_offer_overage_sek_per_month",
        }
    ),
    "loyalty_price": frozenset({"current_new_customer_fee_sek", "current_monthly_fee_sek"}),
    "new_customer_price": frozenset(
        {"offer_new_customer_discount_sek", "offer_new_customer_fee_sek"}
    ),
    "invoice_fee_avoided": frozenset({"invoice_fee_last_sek", "invoice_fees_12m_sek"}),
    "binding_ends": frozenset({"months_to_binding_end"}),
}
_REASON_FEATURES["usage_near_allowance"] = _REASON_FEATURES["usage_above_allowance"]


def reason(code: str, locale: Locale, text_code: str | None = None, **values: str) -> Reason:
    """The reason ``code`` in the locale; ``text_code`` picks a variant of the wording."""
    sv, en = _TEXT[text_code or code]
    return Reason(code=code, text=(en if locale == "en" else sv).format(**values))


def _usage_facts(
    candidate: Candidate, account: Account, locale: Locale, title: str
) -> list[Reason]:
    """Facts from usage and plan fit; only for personalised offers."""
    facts = []
    fit = candidate.fit
    saving = candidate.saving_sek or 0.0
    if candidate.offer.kind in ("plan", "addon") and _half_up(saving, 0) >= 1:
        facts.append(reason("plan_fit_saving", locale, title=title, sek=format_sek(saving, locale)))
    if raises_data(candidate.offer, account) and data_nearly_used(account):
        used, included = account.data_gb_avg_3m, account.current_data_gb
        if not math.isnan(used):
            code = "usage_above_allowance" if used > included else "usage_near_allowance"
            facts.append(
                reason(
                    code,
                    locale,
                    used=format_gb(used, locale),
                    included=format_gb(included, locale),
                )
            )
    if raises_roaming(candidate.offer, account) and roaming_nearly_used(account):
        used, included = account.roaming_data_gb_avg_3m, account.current_roaming_data_gb
        if not math.isnan(used) and included > 0:
            facts.append(
                reason(
                    "roaming_usage",
                    locale,
                    used=format_gb(used, locale),
                    included=format_gb(included, locale),
                )
            )
    # What the customer was billed for overage over the three months, not plan fit's figure for
    # today's plan: after a plan change the two differ, and the sentence says "you have paid".
    # Only for an offer that would not have cost more than today for the usage they had: beside
    # one that costs more than the overage it removes (a 79 kr add-on for 6 kr of overage), the
    # sentence reads as a saving that is not there.
    paid = as_float(account.features.get("overage_sek_avg_3m"))
    if (
        fit is not None
        and not math.isnan(paid)
        and _half_up(paid, 0) >= 1
        and fit.offer_overage_sek < fit.current_overage_sek
        and _half_up(saving, 0) >= 0
    ):
        facts.append(reason("overage_paid", locale, sek=format_sek(paid, locale)))
    return facts


def _contract_facts(
    candidate: Candidate, account: Account, locale: Locale, invoice_date: dt.date
) -> list[Reason]:
    """Facts from the contract and billing, shown with or without profiling."""
    offer = candidate.offer
    facts = []
    if offer.kind == "loyalty":
        facts.append(
            reason(
                "loyalty_price",
                locale,
                price=format_sek(candidate.price_sek, locale, whole=False),
                current=format_sek(account.current_monthly_fee_sek, locale, whole=False),
            )
        )
    elif offer.kind == "payment_help":
        if is_debt_help(offer):
            facts.append(reason("payment_support", locale))
        else:
            facts.append(
                reason(
                    "invoice_fee_avoided",
                    locale,
                    sek=format_sek(account.invoice_fee_last_sek, locale, whole=False),
                )
            )
    elif candidate.price_sek < offer.monthly_fee_sek:
        facts.append(
            reason(
                "new_customer_price",
                locale,
                price=format_sek(candidate.price_sek, locale, whole=False),
            )
        )
    binding_end = account.binding_end_date
    if offer.kind == "plan" and binding_end is not None and account.is_bound_on(invoice_date):
        facts.append(reason("binding_ends", locale, date=binding_end.isoformat()))
    return facts


def _weight(fact: Reason, contributions: Sequence[Contribution]) -> float:
    features = _REASON_FEATURES.get(fact.code, frozenset())
    return sum(abs(c.contribution) for c in contributions if c.feature in features)


def offer_reasons(
    candidate: Candidate,
    account: Account,
    *,
    title: str,
    locale: Locale,
    invoice_date: dt.date,
    personalised: bool,
    segment: str,
    contributions: Sequence[Contribution] = (),
) -> list[Reason]:
    """Up to ``MAX_REASONS`` reasons, then the offer's own binding period when it has one."""
    offer = candidate.offer
    if personalised:
        facts = _usage_facts(candidate, account, locale, title)
        facts += _contract_facts(candidate, account, locale, invoice_date)
        if contributions:
            # Stable sort: without weight the fact order above stands.
            facts.sort(key=lambda fact: -_weight(fact, contributions))
    else:
        generic = "generic_offer_business" if segment == "business" else "generic_offer_consumer"
        facts = [reason("generic_offer", locale, generic)]
        facts += _contract_facts(candidate, account, locale, invoice_date)
    if not facts:
        facts.append(
            reason(
                "offer_price",
                locale,
                title=title,
                price=format_sek(candidate.price_sek, locale, whole=False),
            )
        )
    reasons = facts[:MAX_REASONS]
    if offer.binding_months > 0 and offer.kind in ("plan", "addon"):
        reasons.append(
            reason("offer_binding", locale, title=title, months=str(offer.binding_months))
        )
    return reasons
