"""Offers: one decision per invoice, logged durably before it is answered (role renderer)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
import weakref

from fastapi import APIRouter
from fastapi.responses import Response

from serving.api.deps import RendererRole, Services, ServicesDep
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import OffersRequest, OffersResponse
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


def _decide(services: Services, body: OffersRequest, day: dt.date) -> Decision:
    experiment = services.experiments.running_on(day)
    assignment = None
    policy = "model"
    if experiment is not None:
        variant = assign_variant(experiment.key, body.customer_id, experiment.variants)
        assignment = ExperimentAssignment(key=experiment.key, variant=variant.name)
        policy = variant.policy
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


# What the engine's log holds that the response (stored as sent) and the decision columns hold too.
_STORED_ELSEWHERE = frozenset(
    {
        "invoice_id",
        "customer_id",
        "policy",
        "model_version",
        "experiment",
        "consent",
        "consent_used",
        "usage_summary",
        "degraded",
    }
)


def _record(decision: Decision, decision_id: str, response_json: str) -> DecisionRecord:
    full = decision.to_log_dict()
    log = {key: value for key, value in full.items() if key not in _STORED_ELSEWHERE}
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
        consent=full["consent_used"],
        response_json=response_json,
        log=log,
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
def decide_offers(body: OffersRequest, services: ServicesDep, _: RendererRole) -> Response:
    """Decide the offers for one invoice; the same invoice_id always gets the same decision."""
    started = time.perf_counter()
    stored = services.log.find(body.invoice_id)
    if stored is not None:
        return _replay(stored, body)
    looked_up = time.perf_counter()
    try:
        decision = _decide(services, body, body.invoice_date or dt.datetime.now(dt.UTC).date())
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
