"""The experiment page's charts laid out from a report's JSON: positions follow the numbers, and
every mark keeps the report's own figures."""

from __future__ import annotations

from typing import Any

import pytest

from serving.experiment_charts import LEFT, NAME_WIDTH, RIGHT, WIDTH, rate_chart, time_charts


def _point(through: str, rate: float | None, difference: float | None = None) -> dict[str, Any]:
    return {
        "through": through,
        "customers": 1,
        "decisions": 1,
        "accepted": 0,
        "acceptance_rate": rate,
        "interval": None if rate is None else {"low": rate - 0.6, "high": rate + 0.1},
        "difference": None
        if difference is None
        else {
            "against": "a",
            "value": difference,
            "interval": {"low": difference - 0.1, "high": difference + 0.1},
            "p_value": 0.5,
        },
    }


REPORT: dict[str, Any] = {
    "variants": [
        {
            "name": "a",
            "acceptance_rate": 0.25,
            "acceptance_interval": {"low": -0.05, "high": 0.35},
            "click_rate": None,
            "click_interval": None,
        },
        {
            "name": "b",
            "acceptance_rate": 0.1,
            "acceptance_interval": None,
            "click_rate": None,
            "click_interval": None,
        },
    ],
    "cumulative": {
        "metric": "acceptance_rate",
        "period": "day",
        "control": "a",
        "series": [
            {
                "variant": "a",
                "points": [_point("2026-12-01", 0.2), _point("2026-12-05", 0.25)],
            },
            {
                "variant": "b",
                "points": [_point("2026-12-01", None), _point("2026-12-05", 0.1, -0.15)],
            },
        ],
    },
}


def test_the_rate_chart_places_each_rate_on_a_rounded_axis() -> None:
    chart = rate_chart(REPORT, "acceptance_rate", "Acceptance")
    # The axis runs from 0 to 0.4 (steps of 0.1): the interval's -5 % is drawn at 0 but kept.
    assert [tick.label for tick in chart.ticks] == ["0.0 %", "10.0 %", "20.0 %", "30.0 %", "40.0 %"]
    a, b = chart.marks
    width = WIDTH - 170 - NAME_WIDTH
    assert a.x == pytest.approx(NAME_WIDTH + 0.25 / 0.4 * width)
    assert a.x_low == NAME_WIDTH and a.low == -0.05
    assert (a.label, b.label) == ("25.0 % (-5.0 to 35.0)", "10.0 %")
    assert b.x_low is None and b.value == 0.1
    assert "a 25.0 % (-5.0 to 35.0); b 10.0 %" in chart.description
    clicks = rate_chart(REPORT, "click_rate", "Clicks")
    assert [mark.label for mark in clicks.marks] == ["no decisions", "no decisions"]


def test_the_time_charts_place_dates_by_calendar_distance() -> None:
    charts = time_charts(REPORT)
    assert charts is not None
    rates, differences = charts
    a, b = rates.lines
    assert [point.x for point in a.points] == [LEFT, WIDTH - RIGHT]
    assert [point.value for point in b.points] == [0.1]  # no rate on 1 December: no point
    assert [tick.label for tick in rates.x_ticks] == ["2026-12-01", "2026-12-05"]
    (line,) = differences.lines  # the control has no difference line
    assert line.variant == "b" and [p.value for p in line.points] == [-0.15]
    assert (line.points[0].low, line.points[0].high) == pytest.approx((-0.25, -0.05))
    assert differences.zero is not None and differences.zero < differences.plot_bottom
    assert "b -15.0 pp (-25.0 to -5.0)" in differences.description
    empty = {**REPORT, "cumulative": {**REPORT["cumulative"], "series": []}}
    assert time_charts(empty) is None
