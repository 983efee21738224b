"""``offers monitor``: input drift, prediction drift and the degraded share of a period, against
the champion ranker's training window, as a table for people or JSON for scripts."""

from __future__ import annotations

import datetime as dt

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from core.settings import Settings
from serving.decision_log import DecisionLog
from serving.monitoring import monitoring_report
from training import tracking
from training.drift import Calibration, InputProfile, MonitoringReport, profile_of
from training.registry import RANKER_MODEL
from training.served_model import model_files


class MonitorUnavailable(RuntimeError):
    """A store the report needs did not answer; the message says which."""


_STATUS_STYLE = {"ok": "green", "warn": "yellow", "alert": "bold red", "too_few": "dim"}


def champion_profile(settings: Settings) -> tuple[str | None, InputProfile | None]:
    """The champion ranker's version and the input profile stored with it (None, None without a
    champion). Reads the model's metadata only, not the model."""
    champion = tracking.champion(RANKER_MODEL, settings)
    if champion is None:
        return None, None
    directory = tracking.model_directory(RANKER_MODEL, champion.version, settings)
    return champion.label, profile_of(model_files(directory).metadata)


def run_monitor(settings: Settings, since: dt.date | None, now: dt.datetime) -> MonitoringReport:
    """The report from ``since`` (default: ``OFFERS_MONITOR_WINDOW_DAYS`` back) until ``now``."""
    start = (
        now - dt.timedelta(days=settings.monitor_window_days)
        if since is None
        else dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    )
    try:
        model_version, profile = champion_profile(settings)
    except Exception as error:  # MLflow raises its own types for a store that does not answer
        raise MonitorUnavailable(
            f"the model registry did not answer ({type(error).__name__}): the champion's "
            "training window is needed to compare the inputs with"
        ) from error
    try:
        log = DecisionLog.from_settings(settings)
        try:
            return monitoring_report(log, profile, model_version, settings, start, now)
        finally:
            log.close()
    except SQLAlchemyError as error:
        raise MonitorUnavailable(
            f"the decision log database did not answer ({type(error).__name__})"
        ) from error


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, '')}]{status}[/]"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _calibration_row(week: Calibration) -> tuple[str, ...]:
    interval = (
        "–"
        if week.observed_low is None
        else f"{_share(week.observed_low)}–{_share(week.observed_high)}"
    )
    gap = "–" if week.gap is None else f"{week.gap * 100:+.1f} pts"
    return (
        week.period,
        str(week.offers),
        _share(week.predicted),
        _share(week.observed),
        interval,
        gap,
        _status(week.status),
    )


def render(report: MonitoringReport) -> Group:
    """The report as rich tables: inputs by PSI (highest first), weeks, degraded share, advice."""
    thresholds = report.thresholds
    header = (
        f"Decisions {report.since[:10]} to {report.until[:10]}; champion "
        f"{report.model_version or 'none'}, trained on {report.profile_window or '–'}; "
        f"{report.decisions_with_inputs} model decisions with inputs."
    )
    inputs = Table(
        title=(
            f"Input drift (PSI; warn ≥ {thresholds.psi_warn:g}, alert ≥ {thresholds.psi_alert:g})"
        ),
        title_justify="left",
    )
    for column in ("feature", "PSI", "status"):
        inputs.add_column(column, justify="right" if column == "PSI" else "left")
    for drift in sorted(report.inputs, key=lambda d: -1.0 if d.psi is None else -d.psi):
        inputs.add_row(escape(drift.feature), _number(drift.psi), _status(drift.status))
    weeks = Table(
        title=(
            "Prediction drift by ISO week (first-placed offers; marked when the gap exceeds "
            f"{thresholds.calibration_gap * 100:g} points)"
        ),
        title_justify="left",
    )
    for column in ("week", "offers", "predicted", "observed", "95 % interval", "gap", "status"):
        weeks.add_column(column, justify="left" if column in {"week", "status"} else "right")
    for number, week in enumerate(report.weeks, start=1):
        weeks.add_row(*_calibration_row(week), end_section=number == len(report.weeks))
    if report.weeks:
        weeks.add_row(*_calibration_row(report.overall))
    degraded = report.degraded
    lines: list[RenderableType] = [
        escape(header),
        inputs,
        weeks,
        f"Degraded answers: {degraded.degraded} of {degraded.answers} "
        f"({_share(degraded.share)}; ok up to {thresholds.degraded_share:.0%}) "
        f"{_status(degraded.status)}",
        *[f"[dim]Note: {escape(note)}[/]" for note in report.notes],
        f"[bold]{escape(report.advice)}[/]" if report.advice else "No threshold crossed.",
    ]
    return Group(*lines)


def print_report(report: MonitoringReport, console: Console) -> None:
    console.print(render(report))
