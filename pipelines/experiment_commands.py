"""``offers experiments create|list|stop|report``: the experiments service the API uses, from a
terminal, on the database of ``OFFERS_DATABASE_URL``.

A command is run by whoever operates the service, so it may create what only the admin role may
create through the API (a ``model:<version>`` variant, an experiment holding back every invoice);
a model version must still be one the registry can serve.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from core.settings import Settings, get_settings
from serving.decision.consent import MODEL_PREFIX
from serving.decision_log import DecisionLog
from serving.decision_log.records import Experiment
from serving.experiment_definition import ExperimentCreate
from serving.experiments import (
    ExperimentEnded,
    ExperimentExists,
    ExperimentOverlaps,
    ExperimentResults,
    Experiments,
    contract_exits,
)
from serving.scoring_model import challenger_version

if TYPE_CHECKING:
    from pipelines.experiment_off_policy import OffPolicyEstimate


class ExperimentRefused(ValueError):
    """The command cannot do what was asked; the message says why."""


@contextmanager
def opened(settings: Settings | None = None) -> Iterator[Experiments]:
    """The experiments service over the configured decision log, churn from the data folder."""
    settings = settings or get_settings()
    log = DecisionLog.from_settings(settings)
    try:
        yield Experiments(log, exits=lambda: contract_exits(settings.data_dir))
    finally:
        log.close()


def definition(body: Mapping[str, Any]) -> ExperimentCreate:
    """The experiment checked as ``POST /v1/experiments`` checks it; :class:`ExperimentRefused`
    naming each field at fault otherwise."""
    try:
        return ExperimentCreate.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'experiment'}: "
            f"{problem['msg'].removeprefix('Value error, ')}"
            for problem in error.errors()
        )
        raise ExperimentRefused(f"the experiment is not valid: {problems}") from error


def _check_challengers(created: ExperimentCreate, settings: Settings) -> None:
    from training.registry import RANKER_MODEL, load_version

    for variant in created.variants:
        if not variant.policy.startswith(MODEL_PREFIX):
            continue
        try:
            load_version(RANKER_MODEL, challenger_version(variant.policy), settings)
        except Exception as error:  # any failure to load means it cannot be served
            raise ExperimentRefused(
                f"{variant.policy}: no such offer-ranker version can be served from the registry "
                f"({type(error).__name__})"
            ) from error


def create(body: Mapping[str, Any], settings: Settings | None = None) -> Experiment:
    """Create the experiment ``body`` describes (the JSON of ``POST /v1/experiments``)."""
    settings = settings or get_settings()
    created = definition(body)
    _check_challengers(created, settings)
    with opened(settings) as experiments:
        try:
            return experiments.create(created.spec())
        except ExperimentExists as error:
            raise ExperimentRefused(f"an experiment with key {created.key} exists") from error
        except ExperimentOverlaps as error:
            other = error.other
            raise ExperimentRefused(
                f"experiment {other.key} in layer {other.layer} runs from "
                f"{other.start:%Y-%m-%d %H:%M} to {other.closes_at:%Y-%m-%d %H:%M} UTC; "
                "experiments of one layer may not overlap"
            ) from error


def stop(key: str, settings: Settings | None = None) -> Experiment:
    """Stop an experiment now; KeyError for no such key."""
    with opened(settings) as experiments:
        try:
            return experiments.stop(key)
        except ExperimentEnded as error:
            raise ExperimentRefused(
                f"experiment {key} has ended; there is nothing to stop"
            ) from error


def listed(settings: Settings | None = None) -> list[Experiment]:
    with opened(settings) as experiments:
        return experiments.all()


def report(key: str, settings: Settings | None = None) -> ExperimentResults:
    """An experiment's report; KeyError for no such key."""
    with opened(settings) as experiments:
        return experiments.report(key)


# Terminal output --------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _points(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def experiments_table(experiments: list[Experiment]) -> Table:
    table = Table(title="Experiments")
    for heading in ("key", "layer", "start", "end", "stopped", "variants", "control"):
        table.add_column(heading)
    for experiment in experiments:
        table.add_row(
            experiment.key,
            experiment.layer,
            f"{experiment.start:%Y-%m-%d %H:%M}",
            f"{experiment.end:%Y-%m-%d %H:%M}",
            "–" if experiment.stopped_at is None else f"{experiment.stopped_at:%Y-%m-%d %H:%M}",
            ", ".join(f"{v.name} {v.weight:g} {v.policy}" for v in experiment.variants),
            experiment.control or "(default)",
        )
    return table


def report_view(report: ExperimentResults) -> RenderableType:
    """The report as terminal tables: warnings first, then per variant, then the differences."""
    stopped = "" if report.stopped_at is None else f", stopped {report.stopped_at:%Y-%m-%d %H:%M}"
    heading = Text(
        f"{report.key} (layer {report.layer}, {report.status}{stopped}): "
        f"{report.start:%Y-%m-%d} – {report.end:%Y-%m-%d}, {report.customers} customers"
        + ("" if report.planned_customers is None else f" of {report.planned_customers} planned")
        + f", control {report.control}"
    )
    parts: list[RenderableType] = [heading]
    for warning in report.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    variants = Table(title="Per variant (rates per decision, intervals clustered by customer)")
    for column in (
        "variant",
        "policy",
        "weight",
        "customers",
        "decisions",
        "impressions/cust.",
        "click rate",
        "acceptance (95 % CI)",
        "revenue SEK/cust./month",
        "churn",
        "objections",
    ):
        variants.add_column(column, justify="left" if column in {"variant", "policy"} else "right")
    for row in report.variants:
        acceptance = _percent(row.acceptance_rate)
        if row.acceptance_interval is not None:
            acceptance += (
                f" ({_percent(row.acceptance_interval.low)}–"
                f"{_percent(row.acceptance_interval.high)})"
            )
        churn = "n/a"
        if row.churn is not None:
            churn = f"{_percent(row.churn.rate)} of {row.churn.followed}"
        variants.add_row(
            row.name,
            row.policy,
            f"{row.weight:g}",
            str(row.customers),
            str(row.decisions),
            "–" if row.impressions_per_customer is None else f"{row.impressions_per_customer:.2f}",
            _percent(row.click_rate),
            acceptance,
            "–"
            if row.revenue_change_sek_per_customer is None
            else f"{row.revenue_change_sek_per_customer:+.2f}",
            churn,
            str(row.objections),
        )
    parts.append(variants)
    differences = Table(title=f"Against {report.control} (95 % CI, two-sided p)")
    for column in ("variant", "metric", "difference", "interval", "p"):
        differences.add_column(
            column, justify="left" if column in {"variant", "metric"} else "right"
        )
    for row in report.variants:
        for metric, compared in row.differences.items():
            revenue = metric.startswith("revenue")
            scale = (lambda v: f"{v:+.2f} SEK") if revenue else (lambda v: f"{_points(v)} pp")
            interval = (
                "–"
                if compared.interval is None
                else f"{scale(compared.interval.low)} to {scale(compared.interval.high)}"
            )
            differences.add_row(
                row.name,
                metric,
                scale(compared.value),
                interval,
                "–" if compared.p_value is None else f"{compared.p_value:.3g}",
            )
    parts.append(differences)
    detectable = ", ".join(
        f"{name} {100 * value:.1f} pp" if value is not None else f"{name} –"
        for name, value in report.mde.by_variant.items()
    )
    parts.append(
        Text(
            f"Minimum detectable effect on the {report.mde.metric.replace('_', ' ')} "
            f"({100 * report.mde.power:.0f} % power, α {report.mde.alpha:g}): {detectable or '–'}"
        )
    )
    parts.append(cumulative_table(report))
    srm = report.srm
    if srm is not None:
        mismatch = " (mismatch)" if srm.failed else ""
        parts.append(
            Text(f"Sample ratio: chi-square {srm.chi_square:.2f}, p = {srm.p_value:.3g}{mismatch}")
        )
    return Group(*parts)


def cumulative_table(report: ExperimentResults) -> Table:
    """The cumulative acceptance per variant at the end of each day or week, and against the
    control."""
    cumulative = report.cumulative
    period = "invoice date" if cumulative.period == "day" else "week of invoice date (to Sunday)"
    table = Table(title=f"Cumulative acceptance by {period}, against {cumulative.control}")
    table.add_column("through")
    for line in cumulative.series:
        table.add_column(line.variant, justify="right")
    for index, point in enumerate(cumulative.series[0].points if cumulative.series else ()):
        cells = []
        for line in cumulative.series:
            mine = line.points[index]
            cell = _percent(mine.acceptance_rate)
            if mine.difference is not None:
                cell += f" ({_points(mine.difference.value)} pp)"
            cells.append(cell)
        table.add_row(point.through.isoformat(), *cells)
    return table


def off_policy_view(estimate: OffPolicyEstimate) -> RenderableType:
    """The off-policy estimate of a proposed policy: warnings first, then the estimators."""
    from pipelines.experiment_off_policy import interval_text

    heading = Text(
        f"Proposed policy {estimate.proposed}, not run: its first offer's acceptance estimated on "
        f"{estimate.evaluated} of the experiment's {estimate.decisions} decisions (those that "
        f"showed an offer with a logged propensity); logged acceptance "
        f"{_percent(estimate.logged_acceptance)}, the proposed policy would show the same first "
        f"offer in {_percent(estimate.agreement)}."
    )
    parts: list[RenderableType] = [heading]
    for warning in estimate.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    table = Table(title=f"Off-policy estimates of {estimate.proposed} (bootstrap 95 % CI)")
    for column in ("estimator", "acceptance", "interval"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name, found in (("IPS", estimate.ips), ("SNIPS", estimate.snips), ("DR", estimate.dr)):
        table.add_row(name, _percent(found.value), interval_text(found))
    parts.append(table)
    parts.append(
        Text(f"Effective sample size of the weights: {estimate.effective_sample_size:.0f}")
    )
    return Group(*parts)
