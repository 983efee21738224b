"""The consent gate: policy, profile reads, contributions and summary detail per consent state."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.decision.consent import allowed_policy
from serving.decision.engine import decide
from serving.decision.inputs import ConsentState, lowest_age
from tests.factories.decision import (
    INVOICE_DATE,
    FakeFeatureSource,
    FakeScorer,
    account,
    consent,
    heavy_user,
    make_catalog,
    request,
)

CATALOG = make_catalog()
ADULT, MINOR = 1980, 2012
USAGE_CODES = {
    "plan_fit_saving",
    "usage_above_allowance",
    "usage_near_allowance",
    "roaming_usage",
    "overage_paid",
}
POLICY_LEVEL = {"none": 0, "holdout": 1, "non_personalised": 2, "rules": 3, "model": 4}


def _expected_policy(marketing: bool, profiling: bool, objected: bool, adult: bool) -> str:
    if not marketing or objected:
        return "none"
    return "model" if profiling and adult else "non_personalised"


@pytest.mark.parametrize(
    ("marketing", "profiling", "usage_insights", "objected", "birth_year"),
    [
        (*flags, year)
        for flags in itertools.product([False, True], repeat=4)
        for year in (ADULT, MINOR)
    ],
)
def test_consent_gate_for_every_state(
    marketing: bool, profiling: bool, usage_insights: bool, objected: bool, birth_year: int
) -> None:
    source = FakeFeatureSource(
        consent_row=consent(
            marketing=marketing,
            profiling=profiling,
            usage_insights=usage_insights,
            objected=objected,
            birth_year=birth_year,
        ),
        account_row=heavy_user(invoice_fee_last_sek=29.0),
    )
    scorer = FakeScorer(CATALOG, {"PLAN_15GB": 0.4})
    decision = decide(
        request(), source, CATALOG, policy="model", scorer=scorer, recently_declined=frozenset()
    )

    expected = _expected_policy(marketing, profiling, objected, birth_year == ADULT)
    assert decision.policy == expected
    # The fake raises when the profile is read without consent; here: read exactly for "model".
    assert ("profile" in source.calls) == (expected == "model")
    assert source.calls[0] == "consent"
    assert decision.usage_summary is not None
    assert decision.usage_summary["detail_level"] == ("detailed" if usage_insights else "basic")
    assert decision.to_public_dict()["consent"] == {
        "marketing": marketing,
        "profiling": profiling,
        "usage_insights": usage_insights,
    }
    if expected == "none":
        assert decision.offers == ()
    elif expected == "non_personalised":
        assert decision.offers, "a customer with a loyalty gap and an invoice fee gets offers"
        assert decision.model_version is None
        for offer in decision.offers:
            assert offer.personalised is False
            assert offer.contributions == ()
            assert offer.acceptance_probability is None
            assert offer.customer_saving_sek_per_month is None
            assert not {reason.code for reason in offer.reasons} & USAGE_CODES
            assert offer.reasons[0].code == "generic_offer"
    else:
        assert decision.model_version == "offer-ranker/7"
        assert all(offer.contributions for offer in decision.offers)
        assert all(offer.acceptance_probability is not None for offer in decision.offers)


@pytest.mark.parametrize(
    ("birth_year", "day", "age", "adult"),
    [
        (2008, INVOICE_DATE, 17, False),  # may still be 17 until the end of the year
        (2008, dt.date(2026, 12, 31), 18, True),
        (2007, INVOICE_DATE, 18, True),
        (None, INVOICE_DATE, None, False),  # unknown age is never treated as adult
    ],
)
def test_age_is_the_lowest_the_birth_year_allows(
    birth_year: int | None, day: dt.date, age: int | None, adult: bool
) -> None:
    assert lowest_age(birth_year, day) == age
    state = ConsentState.from_features(consent(birth_year=birth_year), day, today=day)
    assert state.is_adult is adult


def test_no_invoice_date_makes_a_minor_an_adult() -> None:
    # Born 2014: 12 today. An invoice dated 2099 must not make them 84 and profiled.
    today = dt.date(2026, 12, 4)
    minor = consent(birth_year=2014)
    assert not ConsentState.from_features(minor, dt.date(2099, 1, 1), today=today).is_adult
    assert ConsentState.from_features(minor, dt.date(2099, 1, 1), today=today).age == 11
    # A past invoice date still counts: the age on that day.
    assert ConsentState.from_features(consent(birth_year=2000), INVOICE_DATE, today=today).is_adult


def test_missing_consent_values_mean_not_granted() -> None:
    state = ConsentState.from_features({"birth_year": 1980, "segment": "business"}, INVOICE_DATE)
    assert (state.marketing, state.profiling, state.usage_insights, state.objected) == (
        False,
        False,
        False,
        False,
    )
    assert allowed_policy("model", state) == "none"


def test_unknown_policy_is_refused() -> None:
    state = ConsentState.from_features(consent(), INVOICE_DATE)
    with pytest.raises(ValueError, match="unknown policy"):
        allowed_policy("greedy", state)


@settings(max_examples=60, deadline=None)
@given(
    marketing=st.booleans(),
    profiling=st.booleans(),
    usage_insights=st.booleans(),
    objected=st.booleans(),
    birth_year=st.one_of(st.none(), st.integers(min_value=1920, max_value=2020)),
    requested=st.sampled_from(["model", "model:3", "rules", "non_personalised", "holdout"]),
    segment=st.sampled_from(["consumer", "business"]),
)
def test_consent_only_ever_lowers_the_policy(
    marketing: bool,
    profiling: bool,
    usage_insights: bool,
    objected: bool,
    birth_year: int | None,
    requested: str,
    segment: str,
) -> None:
    row = consent(
        marketing=marketing,
        profiling=profiling,
        usage_insights=usage_insights,
        objected=objected,
        birth_year=birth_year,
        segment=segment,
    )
    source = FakeFeatureSource(consent_row=row, account_row=heavy_user(invoice_fee_last_sek=29.0))
    decision = decide(
        request(),
        source,
        CATALOG,
        policy=requested,
        scorer=FakeScorer(CATALOG, {}),
        recently_declined=frozenset(),
    )
    asked = "model" if requested.startswith("model") else requested
    assert POLICY_LEVEL[decision.policy] <= POLICY_LEVEL[asked]
    if not marketing or objected:
        assert decision.policy == "none"
    adult = birth_year is not None and INVOICE_DATE.year - birth_year - 1 >= 18
    if decision.policy == "model":
        assert profiling and adult
    assert ("profile" in source.calls) == (decision.policy == "model")
    if decision.policy != "model":
        assert all(offer.contributions == () for offer in decision.offers)
    if decision.policy in ("none", "holdout"):
        assert decision.offers == ()
    assert decision.usage_summary is not None
    assert decision.usage_summary["detail_level"] == ("detailed" if usage_insights else "basic")


@settings(max_examples=30, deadline=None)
@given(
    data_gb=st.floats(min_value=0.0, max_value=80.0),
    overage=st.floats(min_value=0.0, max_value=500.0),
    segment=st.sampled_from(["consumer", "business"]),
)
def test_non_personalised_offers_do_not_depend_on_usage(
    data_gb: float, overage: float, segment: str
) -> None:
    """Without profiling, two customers with the same contract and bills get the same offers."""
    row = consent(profiling=False, segment=segment)
    plain = FakeFeatureSource(consent_row=row, account_row=account(invoice_fee_last_sek=29.0))
    usage = {f"data_gb_m{m}": data_gb for m in range(1, 7)}
    busy = FakeFeatureSource(
        consent_row=row,
        account_row=account(
            invoice_fee_last_sek=29.0,
            data_gb_avg_3m=data_gb,
            data_gb_max_3m=data_gb,
            overage_sek_avg_3m=overage,
            **usage,
        ),
    )
    decisions = [
        decide(
            request(), source, CATALOG, policy="model", scorer=None, recently_declined=frozenset()
        )
        for source in (plain, busy)
    ]
    offers = [[(o.offer_id, o.reasons, o.monthly_fee_sek) for o in d.offers] for d in decisions]
    assert offers[0] == offers[1]
    assert [o.offer_id for o in decisions[0].offers] == [
        "LOYALTY_NEW_PRICE",
        "PAY_EINVOICE",
        "PAY_AUTOGIRO",
    ]
