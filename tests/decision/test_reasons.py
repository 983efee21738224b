"""Reasons: exact Swedish and English sentences, number formatting, customer-facing facts only."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.decision.candidates import Candidate, PlanFit
from serving.decision.engine import decide
from serving.decision.inputs import Account, Locale
from serving.decision.reasons import (
    Reason,
    format_gb,
    format_number,
    format_sek,
    offer_reasons,
)
from serving.decision.scoring import Contribution
from tests.factories.decision import (
    INVOICE_DATE,
    FakeFeatureSource,
    FakeScorer,
    account,
    consent,
    heavy_user,
    make_catalog,
    profile,
    request,
)

CATALOG = make_catalog()
OFFERS = CATALOG.by_id()
NBSP = "\u00a0"

# On the legacy 10 GB plan at 229 kr, using 14.2 GB a month on average, bound until March.
LEGACY = account(
    current_plan_id="PLAN_10GB_LEGACY",
    current_monthly_fee_sek=229.0,
    current_new_customer_fee_sek=math.nan,
    current_data_gb=10.0,
    current_roaming_data_gb=3.0,
    data_gb_m1=14.0,
    data_gb_m2=14.4,
    data_gb_m3=14.2,
    data_gb_avg_3m=14.2,
    data_gb_max_3m=14.4,
    binding_end_date="2027-03-31",
    invoice_fee_last_sek=29.0,
    overage_sek_m1=1234.0,
    overage_sek_m2=1234.0,
    overage_sek_m3=1234.0,
    overage_sek_avg_3m=1234.0,
)


@pytest.mark.parametrize(
    ("value", "locale", "decimals", "text"),
    [
        (1234, "sv", 0, f"1{NBSP}234"),
        (1234, "en", 0, "1,234"),
        (1234567.25, "sv", 2, f"1{NBSP}234{NBSP}567,25"),
        (1234567.25, "en", 2, "1,234,567.25"),
        (62.5, "sv", 0, "63"),  # half up, as a reader rounds
        (14.25, "en", 1, "14.3"),
    ],
)
def test_number_formatting(value: float, locale: Locale, decimals: int, text: str) -> None:
    assert format_number(value, locale, decimals) == text


def test_money_and_data_formatting() -> None:
    assert format_sek(1234, "sv") == f"1{NBSP}234 kr"
    assert format_sek(1234, "en") == "SEK 1,234"
    assert format_sek(0.59, "sv", whole=False) == "0,59 kr"
    assert format_sek(29.0, "en", whole=False) == "SEK 29"
    assert format_gb(14.2, "sv") == "14,2 GB"
    assert format_gb(14.2, "en") == "14.2 GB"
    assert format_gb(10.0, "sv") == "10 GB"


def _candidate(offer_id: str, **values: Any) -> Candidate:
    return Candidate(offer=OFFERS[offer_id], **values)


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (
            "sv",
            [
                "Med Mobil 15 GB hade du betalat 62 kr mindre per månad de senaste tre månaderna.",
                "Du har i snitt använt 14,2 GB av 10 GB.",
                "Du har i snitt betalat 1\u00a0234 kr per månad för användning utöver det som ingår.",  # noqa: E501
                "Mobil 15 GB har 12 månaders bindningstid.",
            ],
        ),
        (
            "en",
            [
                "With Mobile 15 GB you would have paid SEK 62 less a month over the last three months.",  # noqa: E501
                "On average you have used 14.2 GB of your 10 GB.",
                "You have paid SEK 1,234 a month on average for usage beyond what your plan includes.",  # noqa: E501
                "Mobile 15 GB comes with a 12-month binding period.",
            ],
        ),
    ],
)
def test_plan_reasons_in_both_languages(locale: Locale, expected: list[str]) -> None:
    plan = OFFERS["PLAN_15GB"].model_copy(update={"binding_months": 12})
    fit = PlanFit(
        current_cost_sek=1463.0,
        offer_cost_sek=1401.0,
        saving_sek=62.0,
        offer_overage_sek=1182.0,
        current_overage_sek=1234.0,
        data_allowance_used=1.42,
    )
    candidate = Candidate(offer=plan, price_sek=249.0, fit=fit, saving_sek=62.0)
    reasons = offer_reasons(
        candidate,
        Account.from_features({**LEGACY, "binding_end_date": ""}),
        title=plan.title.get(locale),
        locale=locale,
        invoice_date=INVOICE_DATE,
        personalised=True,
        segment="consumer",
    )
    assert [r.code for r in reasons] == [
        "plan_fit_saving",
        "usage_above_allowance",
        "overage_paid",
        "offer_binding",
    ]
    assert [r.text for r in reasons] == expected


@pytest.mark.parametrize(
    ("locale", "binding", "fee", "loyalty"),
    [
        (
            "sv",
            "Din bindningstid slutar 2027-03-31.",
            "Slipp fakturaavgiften på 29 kr.",
            "Du får samma pris som nya kunder: 219 kr per månad i stället för 249 kr.",
        ),
        (
            "en",
            "Your binding period ends 2027-03-31.",
            "Avoid the invoice fee of SEK 29.",
            "You get the price new customers pay: SEK 219 a month instead of SEK 249.",
        ),
    ],
)
def test_contract_and_billing_reasons(locale: Locale, binding: str, fee: str, loyalty: str) -> None:
    customer = Account.from_features(LEGACY)
    kw: dict[str, Any] = {
        "locale": locale,
        "invoice_date": INVOICE_DATE,
        "personalised": True,
        "segment": "consumer",
    }
    plan = offer_reasons(
        _candidate("PLAN_30GB", price_sek=279.0, fit=None, saving_sek=-50.0),
        customer,
        title="x",
        **kw,
    )
    assert ("binding_ends", binding) in [(r.code, r.text) for r in plan]
    einvoice = offer_reasons(
        _candidate("PAY_EINVOICE", price_sek=0.0, fit=None, saving_sek=29.0),
        customer,
        title="x",
        **kw,
    )
    assert [(r.code, r.text) for r in einvoice] == [("invoice_fee_avoided", fee)]
    loyal = offer_reasons(
        _candidate("LOYALTY_NEW_PRICE", price_sek=219.0, fit=None, saving_sek=30.0),
        Account.from_features(account()),
        title="x",
        **kw,
    )
    assert [(r.code, r.text) for r in loyal] == [("loyalty_price", loyalty)]


def test_usage_reason_from_a_whole_decision() -> None:
    source = FakeFeatureSource(account_row=LEGACY)
    decision = decide(
        request(locale="sv", max_offers=10),
        source,
        CATALOG,
        policy="rules",
        scorer=None,
        recently_declined=frozenset(),
    )
    texts = {r.text for o in decision.offers for r in o.reasons}
    assert "Du har i snitt använt 14,2 GB av 10 GB." in texts
    assert "Slipp fakturaavgiften på 29 kr." in texts


def test_non_personalised_reasons_are_generic() -> None:
    source = FakeFeatureSource(
        consent_row=consent(profiling=False, segment="business"), account_row=LEGACY
    )
    decision = decide(
        request(locale="en"),
        source,
        CATALOG,
        policy="model",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert decision.offers
    for item in decision.offers:
        assert item.reasons[0].text == (
            "An offer we make to business customers, not chosen from your usage."
        )
        assert "GB" not in " ".join(r.text for r in item.reasons)


def test_contributions_order_the_facts() -> None:
    fit = PlanFit(300.0, 219.0, 81.0, 0.0, 71.0, 0.9)
    candidate = Candidate(offer=OFFERS["PLAN_15GB"], price_sek=219.0, fit=fit, saving_sek=81.0)
    kw: dict[str, Any] = {
        "title": "Mobil 15 GB",
        "locale": "sv",
        "invoice_date": INVOICE_DATE,
        "personalised": True,
        "segment": "consumer",
    }
    customer = Account.from_features({**LEGACY, "binding_end_date": ""})
    plain = offer_reasons(candidate, customer, **kw)
    assert [r.code for r in plain][:3] == [
        "plan_fit_saving",
        "usage_above_allowance",
        "overage_paid",
    ]
    weighted = offer_reasons(
        candidate,
        customer,
        contributions=[
            Contribution("overage_sek_avg_3m", 71.0, 0.8),
            Contribution("data_gb_avg_3m", 14.2, -0.3),
        ],
        **kw,
    )
    assert [r.code for r in weighted][:3] == [
        "overage_paid",
        "usage_above_allowance",
        "plan_fit_saving",
    ]


@settings(max_examples=25, deadline=None)
@given(
    ages=st.lists(st.integers(min_value=18, max_value=99), min_size=2, max_size=2, unique=True),
    regions=st.permutations(["Norrbotten", "Skåne", "Gotland"]),
    locale=st.sampled_from(["sv", "en"]),
    data=st.floats(min_value=0.0, max_value=40.0),
)
def test_reasons_never_mention_age_region_or_scores(
    ages: list[int], regions: list[str], locale: Locale, data: float
) -> None:
    usage = {f"data_gb_m{m}": data for m in range(1, 4)}
    scorer = FakeScorer(CATALOG, {"PLAN_30GB": 0.37, "ADDON_DATA_10GB": 0.73}, default=0.11)
    texts = []
    for age, region in zip(ages, regions, strict=False):
        source = FakeFeatureSource(
            consent_row=consent(birth_year=INVOICE_DATE.year - age - 1),
            account_row=heavy_user(
                invoice_fee_last_sek=29.0, data_gb_avg_3m=data, data_gb_max_3m=data, **usage
            ),
            profile_row=profile(age=age, region=region),
        )
        decision = decide(
            request(locale=locale, max_offers=10),
            source,
            CATALOG,
            policy="model",
            scorer=scorer,
            recently_declined=frozenset(),
        )
        assert decision.policy == "model" and decision.offers
        shown = {o.offer_id: sorted(r.text for r in o.reasons) for o in decision.offers}
        texts.append(shown)
        for reason in (r for o in decision.offers for r in o.reasons):
            assert not {"Norrbotten", "Skåne", "Gotland"} & set(reason.text.split())
            words = {w.lower().strip(".,:") for w in reason.text.split()}
            assert not {"age", "ålder", "region", "sannolikhet", "probability"} & words
            for score in ("0.37", "0,37", "37 %", "0.73", "0,73", "0.11", "0,11"):
                assert score not in reason.text
    # The same customer at another age and in another region is told exactly the same.
    assert texts[0] == texts[1]


def _data_addon_reasons(fit: PlanFit, features: dict[str, Any]) -> list[Reason]:
    """The English reasons for Extra data 10 GB at 79 kr, personalised, with ``fit``."""
    addon = OFFERS["ADDON_DATA_10GB"]
    candidate = Candidate(offer=addon, price_sek=79.0, fit=fit, saving_sek=fit.saving_sek)
    return offer_reasons(
        candidate,
        Account.from_features({**features, "binding_end_date": ""}),
        title=addon.title.get("en"),
        locale="en",
        invoice_date=INVOICE_DATE,
        personalised=True,
        segment="consumer",
    )


@pytest.mark.parametrize(("billed", "said"), [(0.0, None), (28.0, "SEK 28"), (math.nan, None)])
def test_the_overage_paid_is_what_was_billed_not_plan_fits_figure_for_todays_plan(
    billed: float, said: str | None
) -> None:
    """A customer who moved to a smaller plan on the 1st: plan fit prices the last three months
    on the new plan (80 kr a month of overage), but they paid what their earlier plan billed."""
    fit = PlanFit(
        current_cost_sek=179.0,
        offer_cost_sek=178.0,
        saving_sek=1.0,
        offer_overage_sek=0.0,
        current_overage_sek=80.0,
        data_allowance_used=1.2,
    )
    reasons = _data_addon_reasons(fit, {**heavy_user(), "overage_sek_avg_3m": billed})
    paid = [r.text for r in reasons if r.code == "overage_paid"]
    if said is None:
        assert paid == []
    else:
        assert paid == [
            f"You have paid {said} a month on average for usage beyond what your plan includes."
        ]


@pytest.mark.parametrize(("saving", "argued"), [(-72.72, False), (-0.4, True), (12.0, True)])
def test_the_overage_paid_is_no_argument_for_an_offer_that_costs_more_than_it_removes(
    saving: float, argued: bool
) -> None:
    """6 kr a month of overage on 1 GB; Extra data 10 GB at 79 kr removes it and costs 72.72 kr
    a month more for that usage: "you have paid SEK 6 …" beside it would read as a saving. The
    usage fact stays; an offer that costs no more (rounded to the krona) keeps both."""
    fit = PlanFit(
        current_cost_sek=105.28,
        offer_cost_sek=105.28 - saving,
        saving_sek=saving,
        offer_overage_sek=0.0,
        current_overage_sek=6.28,
        data_allowance_used=1.2,
    )
    customer = {
        **heavy_user(),
        "current_data_gb": 1.0,
        "data_gb_avg_3m": 1.2,
        "data_gb_max_3m": 1.4,
        "overage_sek_avg_3m": 6.28,
    }
    codes = [r.code for r in _data_addon_reasons(fit, customer)]
    assert "usage_above_allowance" in codes
    assert ("overage_paid" in codes) == argued
