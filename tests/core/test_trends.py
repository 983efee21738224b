"""The one-row trend and window statistics give their numpy functions' values, bit for bit."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.trends import least_squares_slope, row_slope, row_window_stats, window_stats

_MONTH = st.one_of(
    st.just(math.nan),
    st.just(0.0),
    st.just(-0.0),
    st.just(math.inf),
    st.floats(min_value=-100.0, max_value=5000.0, allow_nan=False),
)


@settings(max_examples=500, deadline=None)
@given(history=st.lists(_MONTH, min_size=6, max_size=6))
def test_one_row_equals_the_arrays(history: list[float]) -> None:
    months_ago = [-float(month) for month in range(6)]
    with np.errstate(invalid="ignore", over="ignore"):
        slope = least_squares_slope(np.array([months_ago]), np.array([history]))[0]
        stats = {
            name: values[0] for name, values in window_stats(np.array([history]), (3, 6)).items()
        }
    assert repr(row_slope(months_ago, history)) == repr(float(slope))
    assert {name: repr(value) for name, value in row_window_stats(history, (3, 6)).items()} == {
        name: repr(float(value)) for name, value in stats.items()
    }


def test_the_later_of_two_equal_largest_months_is_kept() -> None:
    stats = row_window_stats([-0.0, 0.0, math.nan, 1.0, 2.0, 3.0], (3,))
    assert repr(stats["max_3m"]) == "0.0" and stats["avg_3m"] == 0.0
    assert math.isnan(row_window_stats([math.nan] * 6, (3,))["avg_3m"])
    assert row_slope([0.0, -1.0, -2.0], [5.0, 3.0, 1.0]) == 2.0
