"""Offer experiments: define them, list them, read their reports (role marketing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from serving.api.deps import (
    SIGN_IN_REDIRECT,
    ExperimentsDep,
    KnownMarketingPageQueryOnly,
    MarketingPage,
    MarketingRole,
    ModelDep,
    NoBody,
)
from serving.api.errors import ProblemError, problem_responses
from serving.api.routes.pages import PAGE_HEADERS
from serving.api.schemas import (
    ExperimentCreate,
    ExperimentPublic,
    ExperimentReport,
    ExperimentsPublic,
)
from serving.decision.consent import MODEL_PREFIX
from serving.decision_log.records import Experiment
from serving.experiment_charts import rate_chart, time_charts
from serving.experiments import (
    ExperimentEnded,
    ExperimentExists,
    ExperimentOverlaps,
    Experiments,
    json_ready,
)
from serving.fields import ID_PATTERN
from serving.scoring_model import challenger_version

router = APIRouter(tags=["experiments"])
# The page takes the session cookie as well as a Bearer key: the app checks the JSON routes' query
# parameters for the whole of ``router`` after the Bearer key, the page's after its sign-in.
page_router = APIRouter(tags=["experiments"])

ExperimentKey = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
TEMPLATES = FilePath(__file__).resolve().parents[2] / "templates"


@cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=TEMPLATES)


def _public(experiment: Experiment) -> ExperimentPublic:
    return ExperimentPublic.model_validate(experiment, from_attributes=True)


@contextmanager
def _known(key: str) -> Iterator[None]:
    """Turn the store's KeyError for an unknown experiment into a 404 problem."""
    try:
        yield
    except KeyError as error:
        raise ProblemError(
            404, f"no experiment with key {key}", kind="unknown-experiment"
        ) from error


def _report(experiments: Experiments, key: str) -> ExperimentReport:
    """The experiment's report as answered; a 404 problem when there is no such experiment."""
    with _known(key):
        results = experiments.report(key)
    return ExperimentReport.model_validate(json_ready(results))


@router.get(
    "/v1/experiments",
    response_model=ExperimentsPublic,
    responses=problem_responses(401, 403, 422),
)
def list_experiments(experiments: ExperimentsDep, _: MarketingRole) -> ExperimentsPublic:
    """All experiments, the first created first."""
    listed = [_public(experiment) for experiment in experiments.all()]
    return ExperimentsPublic(data=listed, count=len(listed))


@router.post(
    "/v1/experiments",
    status_code=201,
    response_model=ExperimentPublic,
    responses=problem_responses(401, 403, 409, 413, 422),
)
def create_experiment(
    experiment: ExperimentCreate,
    experiments: ExperimentsDep,
    models: ModelDep,
    role: MarketingRole,
) -> ExperimentPublic:
    """Create an experiment; invoices dated within start–end are split over its variants.

    Only customers with marketing consent and no objection are enrolled. An experiment whose
    period overlaps another's in the same layer is refused with 409 naming the other.
    Variants that put live invoices on a model version other than the champion, or that hold
    back every invoice, need the admin role; a model version must be one the registry serves."""
    challengers = [v.policy for v in experiment.variants if v.policy.startswith(MODEL_PREFIX)]
    if role != "admin":
        if challengers:
            raise ProblemError(
                403,
                "a variant served by a model version (model:<version>) needs the admin role",
                kind="forbidden",
            )
        if all(variant.policy == "holdout" for variant in experiment.variants):
            raise ProblemError(
                403,
                "an experiment that holds back every invoice needs the admin role",
                kind="forbidden",
            )
    if challengers:
        served = models.add_challengers(challengers).challengers
        missing = [p for p in challengers if challenger_version(p) not in served]
        if missing:
            raise ProblemError(
                422,
                f"{', '.join(missing)}: no such offer-ranker version can be served from the "
                "registry",
                kind="unknown-model-version",
                errors=[
                    {"loc": ["body", "variants"], "msg": "unknown model version", "type": "value"}
                ],
            )
    try:
        created = experiments.create(experiment.spec())
    except ExperimentExists as error:
        raise ProblemError(
            409, f"an experiment with key {experiment.key} exists", kind="experiment-exists"
        ) from error
    except ExperimentOverlaps as error:
        raise ProblemError(409, overlap_detail(error.other), kind="experiment-overlaps") from error
    return _public(created)


def overlap_detail(other: Experiment) -> str:
    """Why an experiment is refused: the other experiment of its layer, and when that runs."""
    return (
        f"experiment {other.key} in layer {other.layer} runs from "
        f"{other.start:%Y-%m-%dT%H:%M:%SZ} to {other.closes_at:%Y-%m-%dT%H:%M:%SZ}; experiments "
        "of one layer may not overlap (choose another period or layer, or stop it first)"
    )


@router.post(
    "/v1/experiments/{key}/stop",
    response_model=ExperimentPublic,
    responses=problem_responses(401, 403, 404, 409, 422),
    dependencies=[NoBody],
)
def stop_experiment(
    key: ExperimentKey, experiments: ExperimentsDep, _: MarketingRole
) -> ExperimentPublic:
    """Stop an experiment now: no invoice is assigned to it from then on (every worker within
    5 s). Its report stays, with `stopped_at`. Stopping it again answers the first stop; one
    that has ended is 409."""
    with _known(key):
        try:
            stopped = experiments.stop(key)
        except ExperimentEnded as error:
            raise ProblemError(
                409,
                f"experiment {key} has ended; there is nothing to stop",
                kind="experiment-ended",
            ) from error
    return _public(stopped)


@router.get(
    "/v1/experiments/{key}",
    response_model=ExperimentPublic,
    responses=problem_responses(401, 403, 404, 422),
)
def get_experiment(
    key: ExperimentKey, experiments: ExperimentsDep, _: MarketingRole
) -> ExperimentPublic:
    """One experiment."""
    with _known(key):
        return _public(experiments.get(key))


@router.get(
    "/v1/experiments/{key}/report",
    response_model=ExperimentReport,
    responses=problem_responses(401, 403, 404, 422),
)
def experiment_report(
    key: ExperimentKey, experiments: ExperimentsDep, _: MarketingRole
) -> ExperimentReport:
    """Per variant and customer (the unit randomised): rates with 95 % intervals, revenue change,
    churn and objections, each against the control with interval and p-value; the
    sample-ratio-mismatch test, the minimum detectable effect and plain warnings."""
    return _report(experiments, key)


@page_router.get(
    "/experiments/{key}",
    response_class=HTMLResponse,
    dependencies=[KnownMarketingPageQueryOnly],
    responses={
        200: {"content": {"text/html": {}}, "description": "The report as a page."},
        **SIGN_IN_REDIRECT,
        **problem_responses(401, 403, 404, 422),
    },
)
def experiment_page(
    key: ExperimentKey, request: Request, experiments: ExperimentsDep, _: MarketingPage
) -> HTMLResponse:
    """The report as a page for people: sign in at `/sign-in` with a marketing key (a browser
    without a session is sent there), or send the key as `Authorization: Bearer <key>`."""
    report = _report(experiments, key)
    data = report.model_dump(mode="json")
    dates = sorted({p["through"] for line in data["cumulative"]["series"] for p in line["points"]})
    return _templates().TemplateResponse(
        request,
        "experiment.html",
        {
            "report": report,
            "acceptance_chart": rate_chart(data, "acceptance_rate", "Acceptance rate per variant"),
            "click_chart": rate_chart(data, "click_rate", "Click rate per variant"),
            "over_time": time_charts(data),
            "cumulative_dates": dates,
        },
        headers=PAGE_HEADERS,
    )
