"""The usage summary on every invoice: what the customer used and paid for, in plain words.

It is the customer's own data, shown whatever the marketing consent. ``basic``: the period, the
plan, the binding end date, usage against what the period's plan included and each extra charge
explained. After a plan change the period was billed on the plan the customer had then
(``period_plan``), and its usage and charges are read against that plan, as the invoice bills them.
``detailed`` (``usage_insights`` consent) adds six months of trends and the plan-fit insight: the
plan that would have cost least for the usage they had. Overage amounts come from
``core.plan_fit``, the same functions that bill and that the models see.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, TypedDict

from core.catalog import Catalog, Offer
from core.plan_fit import FIT_MONTHS, TARIFF, Tariff, overage_row
from serving.decision.candidates import (
    PlanFit,
    PlanFitTable,
    customer_saving,
    nan_if_none,
    offer_matrix,
    plan_fit_matrix,
)
from serving.decision.guardrails import fair_price
from serving.decision.inputs import (
    BILLED_PLAN_KEYS,
    NEWEST_USAGE_MONTH,
    Account,
    Locale,
    as_date,
    as_float,
)
from serving.decision.reasons import format_amount, format_gb, format_sek, reason

TREND_MONTHS = 6

DetailLevel = Literal["basic", "detailed"]
Measure = Literal["data", "voice", "sms", "roaming"]
ChargeKind = Literal[
    "data_overage", "voice_overage", "roaming_overage", "invoice_fee", "reminder_fee"
]


class Period(TypedDict):
    start: str  # first day of the newest usage month, ISO date
    end: str  # its last day


class PlanInfo(TypedDict):
    plan_id: str
    title: str
    monthly_fee_sek: float


class PeriodPlan(TypedDict):
    """The plan the billing period was billed on, when the customer has changed plan since."""

    plan_id: str
    title: str


class Allowances(NamedTuple):
    """What a plan includes a month; NaN = unlimited."""

    data_gb: float
    voice_minutes: float
    roaming_data_gb: float


class UsageLine(TypedDict):
    measure: Measure
    used: float | None
    included: float | None  # None = unlimited
    unit: Literal["GB", "min", "sms"]


class ExtraCharge(TypedDict):
    kind: ChargeKind
    amount_sek: float
    explanation: str


class TrendPoint(TypedDict):
    month: str | None  # first day of the month, ISO date
    used: float | None


class Trend(TypedDict):
    measure: Literal["data", "voice", "roaming", "overage"]
    unit: Literal["GB", "min", "SEK"]
    months: list[TrendPoint]  # oldest first, the newest month last


class PlanFitInsight(TypedDict):
    plan_id: str  # the plan that would have cost least; the current plan when nothing beats it
    title: str
    monthly_fee_sek: float
    cost_sek_per_month: float
    current_cost_sek_per_month: float
    saving_sek_per_month: float
    months: int
    explanation: str


class UsageSummaryDict(TypedDict):
    """The summary as plain JSON-ready data; the HTTP API publishes it as its ``UsageSummary``."""

    period: Period | None
    plan: PlanInfo
    period_plan: PeriodPlan | None  # the period's plan, when not today's
    binding_end_date: str | None
    usage: list[UsageLine]
    extra_charges: list[ExtraCharge]
    extra_charges_total_sek: float
    detail_level: DetailLevel
    trends: list[Trend] | None  # detailed only
    plan_fit: PlanFitInsight | None  # detailed only


def _value(features: Mapping[str, object], name: str, decimals: int = 2) -> float | None:
    number = as_float(features.get(name))
    return None if math.isnan(number) else round(number, decimals)


def _allowance(value: float) -> float | None:
    return None if math.isnan(value) else value


def _months_back(first: dt.date, months: int) -> dt.date:
    index = first.year * 12 + first.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def _period(first: dt.date | None) -> Period | None:
    if first is None:
        return None
    last = calendar.monthrange(first.year, first.month)[1]
    return {"start": first.isoformat(), "end": first.replace(day=last).isoformat()}


def period_plan(account: Account, catalog: Catalog) -> Offer | None:
    """The plan the billing period was billed on (``plan_id_m1``), when it is not today's plan
    and the catalog knows it: a customer who changed plan since is billed for the period on the
    plan they had then."""
    plan_id = account.features.get(BILLED_PLAN_KEYS[0])
    if not plan_id or plan_id == account.current_plan_id:
        return None
    plan = catalog.by_id().get(str(plan_id))
    return plan if plan is not None and plan.kind == "plan" else None


def period_allowances(account: Account, plan: Offer | None) -> Allowances:
    """What the billing period's plan included: ``plan`` (:func:`period_plan`), else today's."""
    if plan is None:
        return Allowances(
            account.current_data_gb,
            account.current_voice_minutes,
            account.current_roaming_data_gb,
        )
    return Allowances(
        nan_if_none(plan.data_gb),
        nan_if_none(plan.voice_minutes),
        nan_if_none(plan.roaming_data_gb),
    )


def _usage(account: Account, included: Allowances) -> list[UsageLine]:
    f = account.features
    return [
        {
            "measure": "data",
            "used": _value(f, "data_gb_m1"),
            "included": _allowance(included.data_gb),
            "unit": "GB",
        },
        {
            "measure": "voice",
            "used": _value(f, "voice_minutes_m1", 0),
            "included": _allowance(included.voice_minutes),
            "unit": "min",
        },
        # The catalog has no SMS allowance: messages are included without limit.
        {"measure": "sms", "used": _value(f, "sms_m1", 0), "included": None, "unit": "sms"},
        {
            "measure": "roaming",
            "used": _value(f, "roaming_data_gb_m1"),
            "included": _allowance(included.roaming_data_gb),
            "unit": "GB",
        },
    ]


_CHARGE_TEXT: dict[ChargeKind, tuple[str, str]] = {
    "data_overage": (
        "Du använde {excess} mer än de {included} som ingår, {price} per GB.",
        "You used {excess} more than the {included} included, at {price} per GB.",
    ),
    "voice_overage": (
        "Du ringde {excess} minuter mer än de {included} minuter som ingår, {price} per minut.",
        "You called {excess} minutes more than the {included} minutes included, "
        "at {price} a minute.",
    ),
    "roaming_overage": (
        "Du surfade {excess} mer i utlandet än de {included} som ingår, {price} per GB.",
        "You used {excess} more data abroad than the {included} included, at {price} per GB.",
    ),
    "invoice_fee": (
        "Fakturaavgift för en faktura som inte betalas med e-faktura eller autogiro.",
        "Invoice fee, charged when an invoice is not paid by e-invoice or direct debit.",
    ),
    "reminder_fee": (
        "Påminnelseavgift för en faktura som inte betalades i tid.",
        "Reminder fee for an invoice that was not paid on time.",
    ),
}


def _text(kind: ChargeKind, locale: Locale, **values: str) -> str:
    sv, en = _CHARGE_TEXT[kind]
    return (en if locale == "en" else sv).format(**values)


def _overage_charge(
    kind: ChargeKind,
    amount: float,
    used: float,
    allowance: float,
    price: float,
    locale: Locale,
    *,
    gigabytes: bool,
) -> ExtraCharge | None:
    if math.isnan(used) or amount <= 0:
        return None
    if gigabytes:
        excess, included = format_gb(used - allowance, locale), format_gb(allowance, locale)
    else:
        excess = format_amount(used - allowance, locale, 0)
        included = format_amount(allowance, locale, 0)
    return {
        "kind": kind,
        "amount_sek": round(amount, 2),
        "explanation": _text(
            kind,
            locale,
            excess=excess,
            included=included,
            price=format_sek(price, locale, whole=False),
        ),
    }


def extra_charges(
    account: Account,
    locale: Locale,
    tariff: Tariff = TARIFF,
    included: Allowances | None = None,
) -> list[ExtraCharge]:
    """The newest month's overage per measure against what ``included`` (the period's plan;
    today's when not given) included, then the last invoice's fees, each explained."""
    f = account.features
    if included is None:
        included = period_allowances(account, None)
    measures: tuple[tuple[ChargeKind, str, float, float, bool], ...] = (
        ("data_overage", "data_gb_m1", included.data_gb, tariff.data_sek_per_gb, True),
        (
            "voice_overage",
            "voice_minutes_m1",
            included.voice_minutes,
            tariff.voice_sek_per_minute,
            False,
        ),
        (
            "roaming_overage",
            "roaming_data_gb_m1",
            included.roaming_data_gb,
            tariff.roaming_sek_per_gb,
            True,
        ),
    )
    used = [as_float(f.get(column)) for _, column, _, _, _ in measures]
    allowances = [allowance for _, _, allowance, _, _ in measures]
    result: list[ExtraCharge] = []
    # Most months stay within every allowance, and then nothing is charged: the billing function
    # is asked only when a measure exceeds its allowance (NaN, unknown or unlimited, never does).
    if any(value > allowance for value, allowance in zip(used, allowances, strict=True)):
        # The billing function's arithmetic for one value each (numpy's cost per call would be
        # most of the work for three numbers).
        amounts = [
            overage_row(value, allowance, measure[3])
            for measure, value, allowance in zip(measures, used, allowances, strict=True)
        ]
        charges = [
            _overage_charge(kind, amount, value, allowance, price, locale, gigabytes=gigabytes)
            for (kind, _, allowance, price, gigabytes), value, amount in zip(
                measures, used, amounts, strict=True
            )
        ]
        result = [charge for charge in charges if charge is not None]
    fees: tuple[tuple[ChargeKind, str], ...] = (
        ("invoice_fee", "invoice_fee_last_sek"),
        ("reminder_fee", "reminder_fee_last_sek"),
    )
    for kind, name in fees:
        amount = as_float(f.get(name))
        if not math.isnan(amount) and amount > 0:
            result.append(
                {"kind": kind, "amount_sek": round(amount, 2), "explanation": _text(kind, locale)}
            )
    return result


def _trend_keys(column: str) -> tuple[str, ...]:
    """A measure's monthly feature names, oldest month first (m6 … m1)."""
    return tuple(f"{column}_m{TREND_MONTHS - i}" for i in range(TREND_MONTHS))


# Rounded as the usage lines round the same measure: whole minutes, so the newest month's trend
# reads as its usage line does.
_TREND_MEASURES: tuple[
    tuple[
        Literal["data", "voice", "roaming", "overage"],
        Literal["GB", "min", "SEK"],
        int,
        tuple[str, ...],
    ],
    ...,
] = (
    ("data", "GB", 2, _trend_keys("data_gb")),
    ("voice", "min", 0, _trend_keys("voice_minutes")),
    ("roaming", "GB", 2, _trend_keys("roaming_data_gb")),
    ("overage", "SEK", 2, _trend_keys("overage_sek")),
)


@functools.lru_cache(maxsize=64)
def _trend_months(first: dt.date | None) -> tuple[str | None, ...]:
    """The trend's months, oldest first, ending with the billing period ``first`` (every one
    unknown without it); the same few periods for every invoice of a run, so kept."""
    return tuple(
        None if first is None else _months_back(first, back).isoformat()
        for back in range(TREND_MONTHS - 1, -1, -1)
    )


def _trends(account: Account, first: dt.date | None) -> list[Trend]:
    f = account.features
    months = _trend_months(first)
    return [
        {
            "measure": measure,
            "unit": unit,
            "months": [
                {"month": month, "used": _value(f, key, decimals)}
                for month, key in zip(months, keys, strict=True)
            ],
        }
        for measure, unit, decimals, keys in _TREND_MEASURES
    ]


def insight_plans(
    catalog: Catalog, account: Account, segment: str, invoice_date: dt.date
) -> list[Offer]:
    """Plans the customer could be on: sold on the invoice date, for their segment, not today's;
    none for a former customer (:meth:`Account.has_left_by`)."""
    if account.has_left_by(invoice_date):
        return []
    return [
        offer
        for offer in catalog.plans
        if offer.is_valid_on(invoice_date)
        and segment in offer.segments
        and offer.offer_id != account.current_plan_id
    ]


def plan_fit_insight(
    account: Account,
    plans: Sequence[Offer],
    fits: Mapping[str, PlanFit],
    *,
    locale: Locale,
    current: PlanInfo,
) -> PlanFitInsight | None:
    """The plan that would have cost least over the last three months, at the price offered."""
    if not plans:
        return None
    current_cost = round(fits[plans[0].offer_id].current_cost_sek, 2)
    savings = {p.offer_id: customer_saving(p, account, fits[p.offer_id]) for p in plans}
    best = min(plans, key=lambda p: (-savings[p.offer_id], p.offer_id))
    saving = savings[best.offer_id]
    if saving <= 0:
        return {
            "plan_id": current["plan_id"],
            "title": current["title"],
            "monthly_fee_sek": current["monthly_fee_sek"],
            "cost_sek_per_month": current_cost,
            "current_cost_sek_per_month": current_cost,
            "saving_sek_per_month": 0.0,
            "months": FIT_MONTHS,
            "explanation": _CURRENT_IS_CHEAPEST[1 if locale == "en" else 0],
        }
    title = best.title.get(locale)
    return {
        "plan_id": best.offer_id,
        "title": title,
        "monthly_fee_sek": fair_price(best),
        "cost_sek_per_month": round(current_cost - saving, 2),
        "current_cost_sek_per_month": current_cost,
        "saving_sek_per_month": saving,
        "months": FIT_MONTHS,
        "explanation": reason(
            "plan_fit_saving", locale, title=title, sek=format_sek(saving, locale)
        ).text,
    }


_CURRENT_IS_CHEAPEST = (
    "Ditt nuvarande abonnemang är det billigaste för din användning.",
    "Your current plan is the cheapest for your usage.",
)


def build_usage_summary(
    account: Account,
    catalog: Catalog,
    *,
    locale: Locale,
    detail_level: DetailLevel,
    segment: str,
    invoice_date: dt.date,
    plan_fits: Mapping[str, PlanFit] | None = None,
    known_fits: PlanFitTable | None = None,
) -> UsageSummaryDict:
    """The usage summary. ``plan_fits`` may carry plan fit already computed by offer id;
    ``known_fits`` plan fit worked out for many accounts at once (see ``plan_fit_matrix``)."""
    plan = catalog.by_id().get(account.current_plan_id)
    current: PlanInfo = {
        "plan_id": account.current_plan_id,
        "title": plan.title.get(locale) if plan is not None else account.current_plan_id,
        "monthly_fee_sek": round(account.current_monthly_fee_sek, 2),
    }
    first = as_date(account.features.get(NEWEST_USAGE_MONTH))
    billed_on = period_plan(account, catalog)
    included = period_allowances(account, billed_on)
    charges = extra_charges(account, locale, included=included)
    summary: UsageSummaryDict = {
        "period": _period(first),
        "plan": current,
        "period_plan": None
        if billed_on is None
        else {"plan_id": billed_on.offer_id, "title": billed_on.title.get(locale)},
        "binding_end_date": account.binding_end_date.isoformat()
        if account.binding_end_date is not None and account.is_bound_on(invoice_date)
        else None,
        "usage": _usage(account, included),
        "extra_charges": charges,
        "extra_charges_total_sek": round(float(sum(c["amount_sek"] for c in charges)), 2),
        "detail_level": detail_level,
        "trends": None,
        "plan_fit": None,
    }
    if detail_level == "detailed":
        plans = insight_plans(catalog, account, segment, invoice_date)
        if plan_fits is None or any(p.offer_id not in plan_fits for p in plans):
            rows = plan_fit_matrix(account, offer_matrix(plans), known=known_fits, offer_list=plans)
            plan_fits = {
                p.offer_id: PlanFit.from_row(row) for p, row in zip(plans, rows, strict=True)
            }
        summary["trends"] = _trends(account, first)
        summary["plan_fit"] = plan_fit_insight(
            account, plans, plan_fits, locale=locale, current=current
        )
    return summary
