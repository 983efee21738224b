"""Plan fit checked by hand: tariff 29 SEK/GB data, 0.59 SEK/min voice, 39 SEK/GB roaming."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.plan_fit import (
    CONTRACT_INPUTS,
    OFFER_INPUTS,
    OFFER_KIND_CODES,
    PLAN_FIT_OUTPUTS,
    USAGE_INPUTS,
    monthly_overage_sek,
    overage_row,
    overage_sek,
    plan_fit,
    plan_fit_arrays,
    plan_fit_rows,
    round_as_numpy,
)

NAN = math.nan
PLAN_5GB = {"fee": 179.0, "new": 149.0, "data": 5.0, "voice": NAN, "roaming": 3.0}
PLAN_UNLIMITED = {"fee": 449.0, "new": 399.0, "data": NAN, "voice": NAN, "roaming": 20.0}
PLAN_15GB = {"fee": 249.0, "new": 219.0, "data": 15.0, "voice": NAN, "roaming": 6.0}


def pair(
    current: dict[str, float],
    *,
    kind: str = "plan",
    offer_fee: float = 249.0,
    offer_data: float = 15.0,
    offer_voice: float = NAN,
    offer_roaming: float = 6.0,
    data: tuple[float, float, float] = (0.0, 0.0, 0.0),
    voice: tuple[float, float, float] = (0.0, 0.0, 0.0),
    roaming: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> dict[str, float]:
    """The plan-fit inputs of one (customer, offer) pair; usage given newest month first."""
    row: dict[str, Any] = {
        "current_monthly_fee_sek": current["fee"],
        "current_new_customer_fee_sek": current["new"],
        "current_data_gb": current["data"],
        "current_voice_minutes": current["voice"],
        "current_roaming_data_gb": current["roaming"],
        "offer_kind_code": OFFER_KIND_CODES[kind],
        "offer_monthly_fee_sek": offer_fee,
        "offer_data_gb": offer_data,
        "offer_voice_minutes": offer_voice,
        "offer_roaming_data_gb": offer_roaming,
    }
    for month in range(3):
        row[f"data_gb_m{month + 1}"] = data[month]
        row[f"voice_minutes_m{month + 1}"] = voice[month]
        row[f"roaming_data_gb_m{month + 1}"] = roaming[month]
    return row


def case(current: dict[str, float], **offer_and_usage: Any) -> dict[str, float]:
    """Plan fit of one pair, as plain floats."""
    result = plan_fit(pd.DataFrame([pair(current, **offer_and_usage)]))
    assert list(result.columns) == list(PLAN_FIT_OUTPUTS)
    return {str(name): float(value) for name, value in result.iloc[0].items()}


def test_unlimited_customer_offered_a_smaller_plan_pays_overage_in_the_heavy_month() -> None:
    fit = case(PLAN_UNLIMITED, data=(12.0, 18.0, 9.0), voice=(100.0, 100.0, 100.0))
    # 18 GB in one month is 3 GB over 15 GB: 87 SEK, 29 SEK a month over three months.
    assert fit["fit_current_cost_sek_per_month"] == pytest.approx(449.0)
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(0.0)
    assert fit["fit_offer_overage_sek_per_month"] == pytest.approx(29.0)
    assert fit["fit_offer_cost_sek_per_month"] == pytest.approx(278.0)
    assert fit["fit_saving_sek_per_month"] == pytest.approx(171.0)
    assert fit["fit_data_allowance_used"] == pytest.approx(round(39 / 45, 4))


def test_moving_to_an_unlimited_plan_removes_the_overage() -> None:
    fit = case(
        PLAN_5GB,
        offer_fee=449.0,
        offer_data=NAN,
        offer_roaming=20.0,
        data=(9.0, 7.0, 5.0),
    )
    # On 5 GB: 4 + 2 + 0 GB over = 174 SEK, 58 SEK a month; unlimited: nothing over.
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(58.0)
    assert fit["fit_current_cost_sek_per_month"] == pytest.approx(237.0)
    assert fit["fit_offer_cost_sek_per_month"] == pytest.approx(449.0)
    assert fit["fit_saving_sek_per_month"] == pytest.approx(-212.0)
    assert fit["fit_data_allowance_used"] == 0.0


def test_zero_usage_costs_the_fees_alone() -> None:
    fit = case(PLAN_5GB, offer_fee=99.0, offer_data=1.0, offer_voice=300.0, offer_roaming=1.0)
    assert fit == {
        "fit_current_cost_sek_per_month": 179.0,
        "fit_offer_cost_sek_per_month": 99.0,
        "fit_saving_sek_per_month": 80.0,
        "fit_offer_overage_sek_per_month": 0.0,
        "fit_current_overage_sek_per_month": 0.0,
        "fit_data_allowance_used": 0.0,
    }


def test_roaming_above_the_allowance_and_the_roaming_add_on() -> None:
    fit = case(
        PLAN_15GB,
        kind="addon",
        offer_fee=49.0,
        offer_data=0.0,
        offer_voice=0.0,
        offer_roaming=10.0,
        data=(10.0, 10.0, 10.0),
        roaming=(8.0, 0.0, 2.0),
    )
    # Today: 8 GB abroad on 6 GB is 2 GB × 39 = 78 SEK, 26 SEK a month. With 10 GB more: none.
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(26.0)
    assert fit["fit_current_cost_sek_per_month"] == pytest.approx(275.0)
    assert fit["fit_offer_overage_sek_per_month"] == pytest.approx(0.0)
    assert fit["fit_offer_cost_sek_per_month"] == pytest.approx(298.0)
    assert fit["fit_saving_sek_per_month"] == pytest.approx(-23.0)
    assert fit["fit_data_allowance_used"] == pytest.approx(round(10 / 15, 4))


def test_a_plan_with_unlimited_roaming_charges_no_roaming() -> None:
    fit = case(PLAN_15GB, offer_roaming=NAN, data=(1.0, 1.0, 1.0), roaming=(30.0, 0.0, 0.0))
    assert fit["fit_offer_overage_sek_per_month"] == 0.0
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(24 * 39.0 / 3)


def test_voice_above_a_voice_allowance() -> None:
    plan_1gb = {"fee": 99.0, "new": 99.0, "data": 1.0, "voice": 300.0, "roaming": 1.0}
    fit = case(plan_1gb, offer_fee=179.0, offer_data=5.0, voice=(400.0, 300.0, 250.0))
    # 100 minutes over 300 once: 59 SEK, 19.67 SEK a month; the 5 GB plan has unlimited voice.
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(19.67)
    assert fit["fit_offer_overage_sek_per_month"] == 0.0


def test_an_add_on_with_unlimited_data_makes_data_unlimited() -> None:
    fit = case(
        PLAN_5GB, kind="addon", offer_fee=99.0, offer_data=NAN, offer_voice=0.0, data=(50.0,) * 3
    )
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(45 * 29.0)
    assert fit["fit_offer_overage_sek_per_month"] == 0.0
    assert fit["fit_offer_cost_sek_per_month"] == pytest.approx(179.0 + 99.0)


def test_loyalty_price_is_what_new_customers_pay_and_payment_help_changes_nothing() -> None:
    loyalty = case(PLAN_5GB, kind="loyalty", offer_fee=0.0, offer_data=0.0, offer_roaming=0.0)
    assert loyalty["fit_offer_cost_sek_per_month"] == 149.0
    assert loyalty["fit_saving_sek_per_month"] == 30.0
    help_ = case(PLAN_5GB, kind="payment_help", offer_fee=0.0, data=(9.0, 9.0, 9.0))
    assert help_["fit_saving_sek_per_month"] == 0.0
    assert help_["fit_offer_cost_sek_per_month"] == help_["fit_current_cost_sek_per_month"]


def test_a_customer_with_one_month_of_usage_is_averaged_over_that_month() -> None:
    fit = case(PLAN_5GB, data=(8.0, NAN, NAN))
    assert fit["fit_current_overage_sek_per_month"] == pytest.approx(3 * 29.0)
    assert fit["fit_data_allowance_used"] == pytest.approx(round(8 / 15, 4))


def test_many_rows_at_once_keep_their_index_and_values() -> None:
    frame = pd.DataFrame(
        [
            pair(PLAN_UNLIMITED, data=(12.0, 18.0, 9.0)),
            pair(PLAN_5GB, data=(9.0, 7.0, 5.0), offer_fee=449.0, offer_data=NAN),
            pair(PLAN_5GB, kind="loyalty", offer_fee=0.0),
        ],
        index=[10, 20, 30],
    )
    result = plan_fit(frame)
    assert result.index.tolist() == [10, 20, 30]
    assert result["fit_saving_sek_per_month"].tolist() == [171.0, -212.0, 30.0]


def test_monthly_overage_treats_nan_allowance_as_unlimited() -> None:
    overage = monthly_overage_sek(
        np.array([10.0, 10.0]),
        np.array([500.0, 500.0]),
        np.array([2.0, 2.0]),
        np.array([NAN, 5.0]),
        np.array([NAN, 300.0]),
        np.array([NAN, 1.0]),
    )
    assert overage.tolist() == [0.0, 5 * 29.0 + 200 * 0.59 + 39.0]


# --- one customer in plain Python: the same numbers as the arrays, to the last bit ------------

_VALUE = st.one_of(
    st.sampled_from([0.0, -0.0, NAN, math.inf, -math.inf, 1e308, 5e-324, 0.005, 0.015, 2.675]),
    st.floats(min_value=-5.0, max_value=500.0, allow_nan=False),
    st.integers(min_value=0, max_value=5000).map(lambda cents: cents / 100),
)
_KIND = st.sampled_from([*map(float, OFFER_KIND_CODES.values()), NAN, 7.0])
_CUSTOMER = st.lists(_VALUE, min_size=len(USAGE_INPUTS) + len(CONTRACT_INPUTS), max_size=14)
_OFFER = st.tuples(_KIND, _VALUE, _VALUE, _VALUE, _VALUE).map(list)


_PLAN_15GB_OFFER = [float(OFFER_KIND_CODES["plan"]), 249.0, 15.0, NAN, 6.0]


@settings(max_examples=600, deadline=None)
@given(customer=_CUSTOMER, offers=st.lists(_OFFER, min_size=1, max_size=12))
# No month of data usage known (a new customer): the means are over one month, not zero.
@example(customer=[NAN] * 9 + [179.0, 5.0, NAN, 3.0, 149.0], offers=[_PLAN_15GB_OFFER])
# Unlimited use of an unlimited allowance: inf − inf is NaN, and NaN is what the costs are.
@example(customer=[math.inf] + [1.0] * 8 + [179.0, math.inf, NAN, 3.0, 149.0], offers=[[0.0] * 5])
# Every month -0.0 against allowances of 0.0: the overage is 0.0, as numpy's sum from 0.0 gives.
@example(customer=[-0.0] * 9 + [179.0, 0.0, 0.0, 0.0, 149.0], offers=[[1.0, 10.0, 0.0, 0.0, 0.0]])
def test_one_customer_in_plain_python_equals_the_arrays(
    customer: list[float], offers: list[list[float]]
) -> None:
    names = (*USAGE_INPUTS, *CONTRACT_INPUTS, *OFFER_INPUTS)
    block = np.array([customer + offer for offer in offers])
    with np.errstate(all="ignore"):
        arrays = plan_fit_arrays({name: block[:, i] for i, name in enumerate(names)})
    expected = [
        tuple(repr(float(arrays[name][row])) for name in PLAN_FIT_OUTPUTS)
        for row in range(len(offers))
    ]
    assert [tuple(map(repr, row)) for row in plan_fit_rows(customer, offers)] == expected


@settings(max_examples=400, deadline=None)
@given(
    measures=st.lists(
        st.tuples(_VALUE, _VALUE, st.sampled_from([29.0, 0.59, 39.0, 0.0])), min_size=1
    )
)
@example(measures=[(-0.0, 0.0, 29.0), (5.0, 5.0, 29.0), (math.inf, math.inf, 39.0)])
def test_one_overage_in_plain_python_equals_the_billing_function(
    measures: list[tuple[float, float, float]],
) -> None:
    used, allowance, price = (np.array(column) for column in zip(*measures, strict=True))
    with np.errstate(all="ignore"):
        expected = [repr(float(value)) for value in overage_sek(used, allowance, price)]
    assert [repr(overage_row(*measure)) for measure in measures] == expected


def test_one_customer_rounds_and_adds_as_numpy_does() -> None:
    # 2.675 is stored a little below 2.675, and Python's round gives 2.67; the product × 100
    # rounds to 267.5, and numpy (as the one-row path) gives 2.68.
    assert round(2.675, 2) == 2.67
    assert round_as_numpy(2.675, 100.0) == float(np.round(2.675, 2)) == 2.68
    assert round_as_numpy(0.125, 100.0) == 0.12  # half to even, as numpy's rint
    assert repr(round_as_numpy(-0.001, 100.0)) == repr(float(np.round(-0.001, 2))) == "-0.0"
    assert round_as_numpy(math.inf, 100.0) == math.inf and math.isnan(round_as_numpy(NAN, 100.0))
    # A customer who used -0.0 GB each month: the share of the allowance adds up to 0.0, not
    # -0.0, as numpy's sum starts from 0.0.
    customer = [-0.0, -0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 179.0, 5.0, NAN, 3.0, 149.0]
    (row,) = plan_fit_rows(customer, [[float(OFFER_KIND_CODES["plan"]), 249.0, 15.0, NAN, 6.0]])
    assert dict(zip(PLAN_FIT_OUTPUTS, map(repr, row), strict=True)) == {
        "fit_current_cost_sek_per_month": "179.0",
        "fit_offer_cost_sek_per_month": "249.0",
        "fit_saving_sek_per_month": "-70.0",
        "fit_offer_overage_sek_per_month": "0.0",
        "fit_current_overage_sek_per_month": "0.0",
        "fit_data_allowance_used": "0.0",
    }
