"""Administration: reload the champion models now (role admin)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from serving.api.deps import AdminRole, ExperimentsDep, FollowerDep, MetricsDep, ModelDep, NoBody
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import ModelsPublic
from serving.scoring_model import ModelLoadFailed, ModelMismatch, NoChampion

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ModelsPublic,
    responses=problem_responses(401, 403, 409, 422, 503),
    dependencies=[NoBody],
)
def reload_models(
    models: ModelDep,
    experiments: ExperimentsDep,
    metrics: MetricsDep,
    follower: FollowerDep,
    _: AdminRole,
) -> ModelsPublic:
    """Load the models carrying the `champion` alias now, in the worker that received this; the
    other workers and replicas follow within OFFERS_MODEL_POLL_SECONDS. A model with other inputs
    is refused."""
    before = models.current
    challengers = experiments.challenger_policies(dt.datetime.now(dt.UTC))
    try:
        after = models.reload(challengers)
    except ModelMismatch as error:
        metrics.model_reload_failures.labels("model_inputs_mismatch").inc()
        raise ProblemError(
            409, f"{error}; the serving model is kept", kind="model-inputs-mismatch"
        ) from error
    except NoChampion as error:
        metrics.model_reload_failures.labels("no_champion").inc()
        raise ProblemError(
            409, f"{error}; the serving model is kept", kind="no-champion"
        ) from error
    except ModelLoadFailed as error:
        metrics.model_reload_failures.labels("registry_unavailable").inc()
        raise ProblemError(
            503, f"{error}; the serving model is kept", kind="registry-unavailable"
        ) from error
    return ModelsPublic(
        model_version=after.model_version,
        churn_model_version=after.churn_model_version,
        changed=(after.model_version, after.churn_model_version)
        != (before.model_version, before.churn_model_version),
        others_follow_within_seconds=follower.interval_seconds,
    )
