"""Offers: one decision per invoice, logged durably before it is answered (role renderer)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from serving.api.deps import RendererRole, Services, ServicesDep
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import OffersRequest
from serving.decision.consent import MODEL_PREFIX
from serving.decision.engine import Decision, decide, fallback_decision
from serving.decision.inputs import (
    DecisionRequest,
    ExperimentAssignment,
    UnknownCustomerError,
)
from serving.decision_log import DecisionRecord, LoggedOffer, StoredDecision
from serving.experiments import assign_variant
from serving.feature_reader import FeatureStoreUnavailable
from serving.offers_response import OffersResponse
from serving.scoring_model import LightGBMScorer, ModelHolder, ServingModels

router = APIRouter(prefix="/v1", tags=["offers"])
logger = logging.getLogger("serving.api")

FEATURE_STORE_UNAVAILABLE = "feature_store_unavailable"
CHALLENGER_UNAVAILABLE = "challenger_unavailable"
# A challenger another worker loaded (its experiment was created there) is loaded here on first
# use; after a failed load the registry is asked again at most this often per policy.
CHALLENGER_RETRY_SECONDS = 10.0

_challenger_tries: weakref.WeakKeyDictionary[ModelHolder, dict[str, float]] = (
    weakref.WeakKeyDictionary()
)
_challenger_tries_lock = threading.Lock()


def _json(body: str) -> Response:
    return Response(content=body, media_type="application/json")


def _replay(stored: StoredDecision, request: OffersRequest) -> Response:
    if stored.customer_id != request.customer_id:
        raise ProblemError(
            409,
            f"invoice {request.invoice_id} was already decided for another customer",
            kind="invoice-customer-conflict",
        )
    return _json(stored.response_json)


def _may_try_challenger(holder: ModelHolder, policy: str) -> bool:
    """True at most once per ``CHALLENGER_RETRY_SECONDS`` for one policy of one model holder."""
    now = time.monotonic()
    with _challenger_tries_lock:
        tries = _challenger_tries.setdefault(holder, {})
        last = tries.get(policy)
        if last is not None and now - last < CHALLENGER_RETRY_SECONDS:
            return False
        tries[policy] = now
        return True


def _serving_models(holder: ModelHolder, policy: str) -> ServingModels:
    """The serving models, with the policy's challenger loaded here if it can be."""
    models = holder.current
    if (
        policy.startswith(MODEL_PREFIX)
        and models.scorer is not None
        and models.challenger(policy) is None
        and _may_try_challenger(holder, policy)
    ):
        # The experiment may have been created on another worker, which loaded its challenger
        # there only. A load that fails is logged; the champion then answers, marked degraded.
        try:
            models = holder.add_challengers([policy])
        except Exception as error:  # a challenger must never turn an invoice into a 5xx
            logger.error(
                "challenger not loaded", extra={"policy": policy, "error": type(error).__name__}
            )
    return models


def _scorer(policy: str, models: ServingModels) -> tuple[LightGBMScorer | None, str | None]:
    """The scorer for a requested policy, and why the answer is degraded when it is missing."""
    if policy.startswith(MODEL_PREFIX):
        challenger = models.challenger(policy)
        if challenger is not None:
            return challenger, None
        # The arm's model is not loaded: the champion answers, and the log says so.
        return models.scorer, CHALLENGER_UNAVAILABLE if models.scorer else models.unavailable
    if policy == "model" and models.scorer is None:
        # No champion yet (None): the rules are the policy. A champion that failed to load
        # (model_unavailable): the rules choose, and the engine reports the policy as fallback.
        return None, models.unavailable
    return models.scorer, None


@dataclass(frozen=True)
class _Arm:
    """The policy an invoice is decided under, and the experiment arm that chose it, if any."""

    policy: str
    assignment: ExperimentAssignment | None


def _arm(services: Services, customer_id: str, day: dt.date) -> _Arm:
    experiment = services.experiments.running_on(day)
    if experiment is None:
        return _Arm("model", None)
    variant = assign_variant(experiment.key, customer_id, experiment.variants)
    return _Arm(variant.policy, ExperimentAssignment(key=experiment.key, variant=variant.name))


def _answers_without_waiting(services: Services, arm: _Arm) -> bool:
    """True when nothing on this decision's path can wait on another machine or on a load.

    Then the decision runs on the event loop: a thread-pool hop costs a fraction of a millisecond
    a request (more at the tail on two cores), about a fifth of a whole decision. A local SQLite
    decision log (the caller checks it before choosing the arm), a feature store that bounds its
    own reads (SQLite, or Redis with socket timeouts) and loaded models qualify. A PostgreSQL log,
    a store that needs a watchdog, a store to reopen or that failed in the last seconds, or a
    challenger to load send the request to the thread pool, so that a slow database, store or
    registry never stalls the loop and its probes.
    """
    features = services.features
    if features is None or not getattr(features, "bounds_reads", False):
        return False
    if getattr(features, "recently_failed", False):  # a hanging store: let the waits overlap
        return False
    if arm.policy.startswith(MODEL_PREFIX):
        models = services.models.current
        return models.scorer is None or models.challenger(arm.policy) is not None
    return True


def _decide(services: Services, body: OffersRequest, day: dt.date, arm: _Arm) -> Decision:
    policy, assignment = arm.policy, arm.assignment
    scorer, degraded = _scorer(policy, _serving_models(services.models, policy))
    request = DecisionRequest(
        invoice_id=body.invoice_id,
        customer_id=body.customer_id,
        invoice_date=day,
        locale=body.locale,
        max_offers=body.max_offers,
    )
    source = services.current_features()
    try:
        if source is None:
            raise FeatureStoreUnavailable("not_open")
        declined = services.log.recent_declines(
            body.customer_id, services.settings.decline_cap_invoices
        )
        return decide(
            request,
            source,
            services.catalog,
            policy=policy,
            scorer=scorer,
            recently_declined=declined,
            experiment=assignment,
            degraded=degraded,
        )
    except FeatureStoreUnavailable:
        return fallback_decision(
            request,
            requested_policy=policy,
            degraded=FEATURE_STORE_UNAVAILABLE,
            experiment=assignment,
        )


def _record(decision: Decision, decision_id: str, response_json: str) -> DecisionRecord:
    # The response is stored as sent and the offers' propensities in their own rows; the log
    # column keeps only what neither holds.
    return DecisionRecord(
        decision_id=decision_id,
        invoice_id=decision.invoice_id,
        customer_id=decision.customer_id,
        invoice_date=decision.invoice_date,
        created_at=dt.datetime.now(dt.UTC),
        policy=decision.policy,
        model_version=decision.model_version,
        experiment_key=decision.experiment.key if decision.experiment else None,
        experiment_variant=decision.experiment.variant if decision.experiment else None,
        degraded=decision.degraded,
        consent=decision.consent_used(),
        response_json=response_json,
        log=decision.log_details(),
        offers=tuple(
            LoggedOffer(
                offer_id=offer.offer_id,
                rank=offer.rank,
                propensity=offer.propensity,
                score=offer.expected_value_sek,
            )
            for offer in decision.offers
        ),
    )


@router.post(
    "/offers",
    response_model=OffersResponse,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
)
async def decide_offers(body: OffersRequest, services: ServicesDep, _: RendererRole) -> Response:
    """Decide the offers for one invoice; the same invoice_id always gets the same decision."""
    day = body.invoice_date or dt.datetime.now(dt.UTC).date()
    if services.log.is_local:  # choosing the arm may read the experiments from the log
        arm = _arm(services, body.customer_id, day)
        if _answers_without_waiting(services, arm):
            return _answer(services, body, day, arm)
        return await run_in_threadpool(_answer, services, body, day, arm)
    return await run_in_threadpool(_answer, services, body, day, None)


def _answer(services: Services, body: OffersRequest, day: dt.date, arm: _Arm | None) -> Response:
    started = time.perf_counter()
    stored = services.log.find(body.invoice_id)
    if stored is not None:
        return _replay(stored, body)
    looked_up = time.perf_counter()
    try:
        decision = _decide(services, body, day, arm or _arm(services, body.customer_id, day))
    except UnknownCustomerError as error:
        raise ProblemError(
            404, f"customer {body.customer_id} is not known", kind="unknown-customer"
        ) from error
    decided = time.perf_counter()
    decision_id = str(uuid.uuid4())
    response_json = OffersResponse.for_decision(decision, decision_id).model_dump_json()
    stored, created = services.log.record(_record(decision, decision_id, response_json))
    if not created:  # another request for this invoice committed first: answer with its decision
        return _replay(stored, body)
    logged = time.perf_counter()

    metrics = services.metrics
    metrics.decisions.labels(decision.policy).inc()
    if decision.degraded:
        metrics.degraded.labels(decision.degraded).inc()
    metrics.observe_steps(
        {
            "lookup": looked_up - started,
            "decide": decided - looked_up,
            "log": logged - decided,
            "total": logged - started,
        }
    )
    logger.info(
        "decision",
        extra={
            "decision_id": decision_id,
            "policy": decision.policy,
            "model_version": decision.model_version,
            "degraded": decision.degraded,
            "experiment": decision.experiment.key if decision.experiment else None,
            "variant": decision.experiment.variant if decision.experiment else None,
            "offers": len(decision.offers),
            "latency_ms": round((logged - started) * 1000, 3),
        },
    )
    return _json(response_json)
