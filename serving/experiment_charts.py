"""The experiment page's charts, laid out here and drawn as inline SVG by its template.

No script and no asset from anywhere: every chart is SVG in the page, positioned from the report's
JSON (``GET /v1/experiments/{key}/report``). Each mark carries the numbers it shows as data
attributes (``data-value``, ``data-low``, ``data-high``: the report's floats as JSON writes them)
and as text, so a reader without the picture, a screen reader, or a test reads the same numbers.

- rates per variant: acceptance and click rate with their 95 % intervals, a dot and a whisker;
- cumulative acceptance per variant by invoice date (day, or ISO week);
- the cumulative difference of each variant against the control, with its 95 % band.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Distinct at a glance and against white (WCAG contrast ≥ 3 for marks), in variant order.
PALETTE = ("#1d4f91", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#0e7490", "#be123c")
WIDTH = 720
LEFT, RIGHT, TOP, BOTTOM = 64, 44, 16, 40
ROW = 30
NAME_WIDTH = 120  # the rate chart's variant names, left of the plot
LABEL_WIDTH = 170  # the rate chart's value labels, right of the plot
PLOT_HEIGHT = 220
STEPS = (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0)


def percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _step(span: float, ticks: int = 5) -> float:
    return next((step for step in STEPS if span / step <= ticks), STEPS[-1])


def _domain(values: Sequence[float], *, floor: float, ceiling: float) -> tuple[float, float, float]:
    """A rounded axis from the values (0 always in it), within [floor, ceiling]; and its step."""
    low = max(floor, min([0.0, *values]))
    high = min(ceiling, max([0.0, *values]))
    if high - low < 1e-9:
        high = low + 0.1
    step = _step(high - low)
    return (
        max(floor, math.floor(low / step - 1e-9) * step),
        min(ceiling, math.ceil(high / step - 1e-9) * step),
        step,
    )


def _ticks(low: float, high: float, step: float) -> list[float]:
    count = round((high - low) / step)
    return [round(low + i * step, 10) for i in range(count + 1)]


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class RateMark:
    """One variant's rate and interval: where they are drawn, and the numbers themselves."""

    variant: str
    color: str
    y: float
    value: float | None
    low: float | None
    high: float | None
    x: float | None
    x_low: float | None
    x_high: float | None
    label: str


@dataclass(frozen=True)
class RateChart:
    metric: str
    title: str
    description: str
    height: int
    plot_left: float
    plot_right: float
    ticks: list[Tick]
    marks: list[RateMark]


def rate_chart(report: Mapping[str, Any], metric: str, title: str) -> RateChart:
    """``metric`` (``acceptance_rate`` or ``click_rate``) per variant with its interval
    (``acceptance_interval``, ``click_interval``)."""
    interval_key = metric.replace("_rate", "_interval")
    variants = report["variants"]
    values = [
        number
        for row in variants
        for number in (
            row[metric],
            *((row[interval_key]["low"], row[interval_key]["high"]) if row[interval_key] else ()),
        )
        if number is not None
    ]
    low, high, step = _domain(values, floor=0.0, ceiling=1.0)
    left, right = NAME_WIDTH, WIDTH - LABEL_WIDTH

    def x(value: float) -> float:
        clipped = min(max(value, low), high)
        return round(left + (clipped - low) / (high - low) * (right - left), 2)

    marks = []
    described = []
    for index, row in enumerate(variants):
        value, interval = row[metric], row[interval_key]
        y = TOP + ROW * index + ROW / 2
        label = f"{percent(value)} %" if value is not None else "no decisions"
        if interval is not None:
            label += f" ({percent(interval['low'])} to {percent(interval['high'])})"
        described.append(f"{row['name']} {label}")
        marks.append(
            RateMark(
                variant=row["name"],
                color=PALETTE[index % len(PALETTE)],
                y=y,
                value=value,
                low=None if interval is None else interval["low"],
                high=None if interval is None else interval["high"],
                x=None if value is None else x(value),
                x_low=None if interval is None else x(interval["low"]),
                x_high=None if interval is None else x(interval["high"]),
                label=label,
            )
        )
    height = TOP + ROW * len(variants) + BOTTOM
    return RateChart(
        metric=metric,
        title=title,
        description=f"{title}, with 95 % intervals: " + "; ".join(described) + ".",
        height=height,
        plot_left=left,
        plot_right=right,
        ticks=[Tick(x(t), f"{percent(t)} %") for t in _ticks(low, high, step)],
        marks=marks,
    )


@dataclass(frozen=True)
class Point:
    through: str
    x: float
    y: float
    value: float
    low: float | None = None
    high: float | None = None


@dataclass
class Line:
    variant: str
    color: str
    points: list[Point] = field(default_factory=list)
    band: str = ""  # the interval's polygon, for the differences

    @property
    def path(self) -> str:
        return " ".join(f"{point.x},{point.y}" for point in self.points)


@dataclass(frozen=True)
class TimeChart:
    kind: str
    title: str
    description: str
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    zero: float | None
    lines: list[Line]


def _time_axis(dates: Sequence[str]) -> tuple[dict[str, float], list[Tick]]:
    """x of each date (ISO), by calendar distance; a handful of them labelled."""
    left, right = LEFT, WIDTH - RIGHT
    days = [dt.date.fromisoformat(text) for text in dates]
    first, last = min(days), max(days)
    span = (last - first).days
    positions = {
        text: round(
            (left + right) / 2 if span == 0 else left + (day - first).days / span * (right - left),
            2,
        )
        for text, day in zip(dates, days, strict=True)
    }
    # The first and the last date, and up to four evenly between them.
    shown = min(len(dates), 6)
    indices = sorted({round(i * (len(dates) - 1) / max(shown - 1, 1)) for i in range(shown)})
    return positions, [Tick(positions[dates[i]], dates[i]) for i in indices]


def time_charts(report: Mapping[str, Any]) -> tuple[TimeChart, TimeChart] | None:
    """The cumulative acceptance per variant and each variant's difference against the control,
    over the report's cumulative series; None before any decision."""
    cumulative = report["cumulative"]
    series = cumulative["series"]
    dates = sorted({point["through"] for line in series for point in line["points"]})
    if not dates:
        return None
    positions, x_ticks = _time_axis(dates)
    colors = {row["name"]: PALETTE[i % len(PALETTE)] for i, row in enumerate(report["variants"])}
    top, bottom = TOP, TOP + PLOT_HEIGHT
    control = cumulative["control"]
    period = "invoice date" if cumulative["period"] == "day" else "week of invoice date"

    rates = [p["acceptance_rate"] for line in series for p in line["points"]]
    low, high, step = _domain([r for r in rates if r is not None], floor=0.0, ceiling=1.0)

    def y_rate(value: float) -> float:
        return round(bottom - (value - low) / (high - low) * (bottom - top), 2)

    rate_lines = []
    last_rates = []
    for line in series:
        drawn = Line(line["variant"], colors.get(line["variant"], PALETTE[0]))
        for p in line["points"]:
            if p["acceptance_rate"] is not None:
                drawn.points.append(
                    Point(
                        p["through"],
                        positions[p["through"]],
                        y_rate(p["acceptance_rate"]),
                        p["acceptance_rate"],
                        None if p["interval"] is None else p["interval"]["low"],
                        None if p["interval"] is None else p["interval"]["high"],
                    )
                )
        if drawn.points:
            last_rates.append(f"{drawn.variant} {percent(drawn.points[-1].value)} %")
        rate_lines.append(drawn)
    rates_chart = TimeChart(
        kind="cumulative-rate",
        title=f"Cumulative acceptance rate by {period}",
        description=(
            f"Acceptance rate per variant over every invoice dated up to each {period}, from "
            f"{dates[0]} to {dates[-1]}; at the end: " + ", ".join(last_rates) + "."
        ),
        height=bottom + BOTTOM,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_top=top,
        plot_bottom=bottom,
        x_ticks=x_ticks,
        y_ticks=[Tick(y_rate(t), f"{percent(t)} %") for t in _ticks(low, high, step)],
        zero=None,
        lines=rate_lines,
    )

    spread = [
        number
        for line in series
        for p in line["points"]
        if p["difference"] is not None
        for number in (
            p["difference"]["value"],
            *(
                (p["difference"]["interval"]["low"], p["difference"]["interval"]["high"])
                if p["difference"]["interval"]
                else ()
            ),
        )
    ]
    d_low, d_high, d_step = _domain(spread, floor=-1.0, ceiling=1.0)

    def y_difference(value: float) -> float:
        clipped = min(max(value, d_low), d_high)
        return round(bottom - (clipped - d_low) / (d_high - d_low) * (bottom - top), 2)

    difference_lines = []
    last_differences = []
    for line in series:
        if line["variant"] == control:
            continue
        drawn = Line(line["variant"], colors.get(line["variant"], PALETTE[0]))
        upper, lower = [], []
        for p in line["points"]:
            compared = p["difference"]
            if compared is None:
                continue
            interval = compared["interval"]
            x = positions[p["through"]]
            drawn.points.append(
                Point(
                    p["through"],
                    x,
                    y_difference(compared["value"]),
                    compared["value"],
                    None if interval is None else interval["low"],
                    None if interval is None else interval["high"],
                )
            )
            if interval is not None:
                upper.append(f"{x},{y_difference(interval['high'])}")
                lower.append(f"{x},{y_difference(interval['low'])}")
        drawn.band = " ".join([*upper, *reversed(lower)]) if len(upper) > 1 else ""
        if drawn.points:
            end = drawn.points[-1]
            text = f"{drawn.variant} {percent(end.value, signed=True)} pp"
            if end.low is not None and end.high is not None:
                text += f" ({percent(end.low, signed=True)} to {percent(end.high, signed=True)})"
            last_differences.append(text)
        difference_lines.append(drawn)
    differences_chart = TimeChart(
        kind="cumulative-difference",
        title=f"Cumulative difference in acceptance rate against {control}",
        description=(
            f"Each variant's cumulative acceptance rate minus {control}'s, in percentage points, "
            f"with its 95 % interval as a band; at the end: "
            + (", ".join(last_differences) or "nothing to compare yet")
            + "."
        ),
        height=bottom + BOTTOM,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_top=top,
        plot_bottom=bottom,
        x_ticks=x_ticks,
        y_ticks=[
            Tick(y_difference(t), f"{percent(t, signed=True)} pp")
            for t in _ticks(d_low, d_high, d_step)
        ],
        zero=y_difference(0.0),
        lines=difference_lines,
    )
    return rates_chart, differences_chart
