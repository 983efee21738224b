"""Operations: liveness, readiness and Prometheus metrics (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import Live, Ready
from serving.feature_reader import FeatureStoreUnavailable
from serving.metrics import METRICS_CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    """The process is up."""
    return Live(status="live")


# Load balancers and uptime checkers often probe with HEAD: the same answer without its body.
@router.head("/health/live", include_in_schema=False)
async def live_head() -> Response:
    return Response(status_code=200)


@router.head("/health/ready", include_in_schema=False)
def ready_head(request: Request) -> Response:
    ready(request)  # a service not ready raises its 503, as GET answers it
    return Response(status_code=200)


@router.get("/health/ready", response_model=Ready, responses=problem_responses(503))
def ready(request: Request) -> Ready:
    """Ready once the feature store, the catalog and a model (or the rules) are loaded."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise ProblemError(503, "the service is starting", kind="not-ready")
    features = services.current_features()
    if features is None:
        problem = services.feature_store.problem
        detail = "the feature store is not open" + ("" if problem is None else f": {problem}")
        raise ProblemError(503, detail, kind="not-ready")
    try:
        features.probe()
    except FeatureStoreUnavailable as error:
        raise ProblemError(
            503, f"the feature store does not answer ({error.reason})", kind="not-ready"
        ) from error
    if not services.log.ping():
        raise ProblemError(503, "the decision log database does not answer", kind="not-ready")
    models = services.models.current
    return Ready(
        status="ready",
        model_version=models.model_version,
        churn_model_version=models.churn_model_version,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text."}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: decisions by policy, degraded answers, step latency, events, the
    serving models' versions and load time, failed model reloads."""
    services = getattr(request.app.state, "services", None)
    body = services.metrics.render() if services is not None else b""
    return Response(content=body, media_type=METRICS_CONTENT_TYPE)
