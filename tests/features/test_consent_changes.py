"""One consent answer applied to a consent row: the consent view's rules, for one answer."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract import CONSENT_PURPOSES
from features.consent_changes import (
    PURPOSE_FEATURES,
    ConsentAnswer,
    answer_change_id,
    apply_consent_answer,
)
from features.transforms import consent_features
from features.views import CUSTOMER_CONSENT
from tests.factories import features as f

ROW = {
    "consent_marketing": 1,
    "consent_profiling": 1,
    "consent_usage_insights": 0,
    "objected_marketing": 0,
    "birth_year": 1990,
    "segment": "business",
}


def test_every_purpose_of_the_contract_has_its_feature_in_the_view() -> None:
    assert set(PURPOSE_FEATURES) == set(CONSENT_PURPOSES)
    assert set(PURPOSE_FEATURES.values()) < set(CUSTOMER_CONSENT)


def test_a_grant_sets_its_purpose_and_nothing_else() -> None:
    after = apply_consent_answer(ROW, "usage_insights", True)
    assert after == {**ROW, "consent_usage_insights": 1}


def test_withdrawing_marketing_that_was_granted_is_an_objection() -> None:
    after = apply_consent_answer(ROW, "marketing", False)
    assert (after["consent_marketing"], after["objected_marketing"]) == (0, 1)
    # Other purposes, the birth year and the segment are kept.
    assert {k: v for k, v in after.items() if "marketing" not in k} == {
        k: v for k, v in ROW.items() if "marketing" not in k
    }


def test_withdrawing_marketing_never_granted_is_a_refusal_not_an_objection() -> None:
    never = {**ROW, "consent_marketing": 0}
    assert apply_consent_answer(never, "marketing", False)["objected_marketing"] == 0
    # Unless an earlier answer the caller knows of granted it.
    earlier = apply_consent_answer(never, "marketing", False, granted_before=True)
    assert earlier["objected_marketing"] == 1


def test_an_objection_holds_through_another_withdrawal_and_ends_with_a_grant() -> None:
    objected = {**ROW, "consent_marketing": 0, "objected_marketing": 1}
    assert apply_consent_answer(objected, "marketing", False)["objected_marketing"] == 1
    assert apply_consent_answer(objected, "profiling", False)["objected_marketing"] == 1
    granted = apply_consent_answer(objected, "marketing", True)
    assert (granted["consent_marketing"], granted["objected_marketing"]) == (1, 0)


def test_other_purposes_leave_the_objection_untouched() -> None:
    for purpose in ("profiling", "usage_insights"):
        for granted in (True, False):
            after = apply_consent_answer(ROW, purpose, granted)
            assert after["objected_marketing"] == ROW["objected_marketing"]
            assert after["consent_marketing"] == ROW["consent_marketing"]


def test_missing_values_read_as_not_granted() -> None:
    unknown = dict.fromkeys(ROW)
    after = apply_consent_answer(unknown, "marketing", False)
    assert (after["consent_marketing"], after["objected_marketing"]) == (0, 0)
    assert (
        apply_consent_answer({**unknown, "consent_marketing": float("nan")}, "marketing", False)[
            "objected_marketing"
        ]
        == 0
    )


def test_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown consent purpose 'newsletter'"):
        apply_consent_answer(ROW, "newsletter", True)


def test_the_row_given_is_not_changed() -> None:
    before = dict(ROW)
    apply_consent_answer(ROW, "marketing", False)
    assert before == ROW


def test_a_change_id_is_the_answer_itself() -> None:
    moment = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    answer = ConsentAnswer("C1", "marketing", False, moment)
    same = ConsentAnswer(
        "C1", "marketing", False, moment.astimezone(dt.timezone(dt.timedelta(hours=1)))
    )
    assert answer_change_id(answer) == answer_change_id(same)
    assert answer_change_id(answer) != answer_change_id(
        ConsentAnswer("C1", "marketing", True, moment)
    )
    assert len(answer_change_id(answer)) <= 64 and answer_change_id(answer).startswith("file-")


ANSWERS = st.lists(
    st.tuples(st.sampled_from(CONSENT_PURPOSES), st.booleans()), min_size=1, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(answers=ANSWERS)
def test_answers_applied_one_by_one_give_the_consent_view_s_row(
    answers: list[tuple[str, bool]],
) -> None:
    """The direct path and the view agree: each answer applied to the row in turn (knowing the
    earlier answers) ends where the view computed from all answers ends."""
    start = pd.Timestamp("2025-02-01T00:00:00Z")
    times = [start + pd.Timedelta(hours=i) for i in range(len(answers))]
    rows = [
        f.consent("C1", purpose, granted, moment.isoformat())
        for (purpose, granted), moment in zip(answers, times, strict=True)
    ]
    tables = f.tables(customers=[f.customer("C1", signup_date="2025-01-15")], consents=rows)
    view = consent_features(tables["customers"], tables["consents"])
    expected = view.iloc[-1][list(CUSTOMER_CONSENT)].to_dict()

    row = view.iloc[0][list(CUSTOMER_CONSENT)].to_dict()  # at signup: nothing granted
    for position, (purpose, granted) in enumerate(answers):
        granted_before = any(p == "marketing" and g for p, g in answers[:position])
        row = apply_consent_answer(row, purpose, granted, granted_before=granted_before)
    assert row == expected
