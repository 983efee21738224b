"""Offers for one invoice: the experiment arm, the scorer, the decision and its durable record.

The same invoice_id always gets the same answer: a decision stored for it is replayed, and a new
one is recorded in the decision log before it is answered. A provisional decision (degraded and
without offers, as when the feature store was down) is the exception: a later request decides
afresh, and a decision that is not provisional replaces it in the log. Nothing here knows HTTP:
an answer is the JSON that was stored, and the other outcomes are raised as
:class:`InvoiceCustomerConflict` and :class:`~serving.decision.inputs.UnknownCustomerError`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from core.catalog import Catalog
from serving.decision.arbitration import DEFAULT_OBJECTIVE, Objective
from serving.decision.consent import MODEL_PREFIX
from serving.decision.engine import Decision, decide, fallback_decision
from serving.decision.inputs import DecisionRequest, ExperimentAssignment
from serving.decision_log import DecisionLog, DecisionRecord, LoggedOffer, StoredDecision
from serving.experiments import Experiments, assign_variant
from serving.feature_reader import FeatureStoreUnavailable, OpenFeatureStore
from serving.metrics import ApiMetrics
from serving.scoring_model import LightGBMScorer, ModelHolder, ServingModels

# The decision lines keep the logger name that log queries and dashboards select them by.
logger = logging.getLogger("serving.api")

FEATURE_STORE_UNAVAILABLE = "feature_store_unavailable"
CHALLENGER_UNAVAILABLE = "challenger_unavailable"
# A challenger another worker loaded (its experiment was created there) is loaded here on first
# use; after a failed load the registry is asked again at most this often per policy.
CHALLENGER_RETRY_SECONDS = 10.0

RenderAnswer = Callable[[Decision, str], str]
"""The answer's JSON for a decision and its decision_id, stored as it is sent."""


class InvoiceCustomerConflict(Exception):
    """The invoice was already decided for another customer."""

    def __init__(self, invoice_id: str) -> None:
        super().__init__(f"invoice {invoice_id} was already decided for another customer")
        self.invoice_id = invoice_id


@dataclass(frozen=True)
class Arm:
    """The policy an invoice is decided under, and the experiment arm that chose it, if any."""

    policy: str
    assignment: ExperimentAssignment | None


CHAMPION = Arm("model", None)


class ChallengerRetries:
    """Lets a missing challenger be asked of the registry at most once per interval per policy."""

    def __init__(
        self,
        interval_seconds: float = CHALLENGER_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._last_try: dict[str, float] = {}
        self._lock = threading.Lock()

    def may_try(self, policy: str) -> bool:
        """True, and the try noted, when ``policy`` was not tried within the interval."""
        now = self._clock()
        with self._lock:
            last = self._last_try.get(policy)
            if last is not None and now - last < self.interval_seconds:
                return False
            self._last_try[policy] = now
            return True


class OffersService:
    """Answers one invoice: replays its stored decision, or decides, records and counts one."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        models: ModelHolder,
        log: DecisionLog,
        experiments: Experiments,
        feature_store: OpenFeatureStore,
        metrics: ApiMetrics,
        render: RenderAnswer,
        decline_cap_invoices: int,
        objective: Objective = DEFAULT_OBJECTIVE,
        challenger_retries: ChallengerRetries | None = None,
        invoice_date_window_days: tuple[int, int] = (400, 45),
    ) -> None:
        self.catalog = catalog
        self.models = models
        self.log = log
        self.experiments = experiments
        self.feature_store = feature_store
        self.metrics = metrics
        self.challenger_retries = challenger_retries or ChallengerRetries()
        self._render = render
        self._decline_cap = decline_cap_invoices
        self.objective = objective
        self.invoice_date_window_days = invoice_date_window_days
        # A SQLite file or memory database: choosing an arm or replaying never waits on another
        # machine. The log's database does not change while the service runs.
        self.log_is_local = log.is_local

    def invoice_date_problem(self, day: dt.date, today: dt.date) -> str | None:
        """Why an invoice date is refused, or None: it must lie in a window around today, so that
        no request can move a decision (or a customer's age) far into the past or future."""
        back, ahead = self.invoice_date_window_days
        earliest, latest = today - dt.timedelta(days=back), today + dt.timedelta(days=ahead)
        if earliest <= day <= latest:
            return None
        return (
            f"invoice_date {day.isoformat()} is outside {earliest.isoformat()} to "
            f"{latest.isoformat()} ({back} days back to {ahead} days ahead of today)"
        )

    def arm(self, customer_id: str, day: dt.date) -> Arm:
        """The running experiment's variant for this customer, or the champion without one."""
        experiment = self.experiments.running_on(day)
        if experiment is None:
            return CHAMPION
        variant = assign_variant(experiment.key, customer_id, experiment.variants, experiment.layer)
        return Arm(variant.policy, ExperimentAssignment(key=experiment.key, variant=variant.name))

    def answers_without_waiting(self, arm: Arm) -> bool:
        """True when nothing on this arm's path can wait on another machine or on a load.

        Then the caller may decide on its event loop: a thread-pool hop costs a fraction of a
        millisecond a request (more at the tail on two cores), about a fifth of a whole decision.
        A local decision log (the caller checks :attr:`log_is_local`), a feature store that
        bounds its own reads (SQLite, or Redis with socket timeouts) and loaded models qualify. A
        store that needs a watchdog, a store to reopen or that failed in the last seconds, or a
        challenger to load do not, so that a slow store or registry never stalls the loop.
        """
        features = self.feature_store.source
        if features is None or not features.bounds_reads:
            return False
        if features.recently_failed:  # a hanging store: let the waits overlap in threads
            return False
        if arm.policy.startswith(MODEL_PREFIX):
            models = self.models.current
            return models.scorer is None or models.challenger(arm.policy) is not None
        return True

    def answer(self, request: DecisionRequest, arm: Arm | None = None) -> str:
        """The invoice's answer as JSON: the stored one, or a new decision recorded first.

        A stored provisional decision is decided afresh; the new decision replaces it when it is
        not provisional itself, else the stored answer stands.

        ``arm`` None: chosen here. Raises :class:`InvoiceCustomerConflict` when the invoice was
        decided for another customer, and ``UnknownCustomerError`` for a customer the feature
        store has never seen.
        """
        started = time.perf_counter()
        stored = self.log.find(request.invoice_id)
        if stored is not None:
            replayed = _replayed(stored, request)  # another customer's invoice is refused anyway
            if not stored.provisional:
                return replayed
        looked_up = time.perf_counter()
        decision, scorer = self._decide(
            request, arm or self.arm(request.customer_id, request.invoice_date)
        )
        decided = time.perf_counter()
        decision_id = str(uuid.uuid4())
        response_json = self._render(decision, decision_id)
        # The churn model beside the ranker the decision names: the same scorer object held
        # both, so the log names the pair that decided even while a reload swaps models.
        churn_model_version = (
            scorer.churn_model_version
            if scorer is not None and decision.model_version is not None
            else None
        )
        record = decision_record(
            decision, decision_id, response_json, churn_model_version=churn_model_version
        )
        if stored is not None and record.provisional:
            # Still degraded without offers: the stored answer says as much, and one copy will do.
            return stored.response_json
        superseding = None if stored is None else stored.decision_id
        stored, created = self.log.record(record, superseding=superseding)
        if not created:  # another request for this invoice committed first: answer with that
            return _replayed(stored, request)
        logged = time.perf_counter()

        metrics = self.metrics
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
                "churn_model_version": churn_model_version,
                "degraded": decision.degraded,
                "supersedes": superseding,
                "experiment": decision.experiment.key if decision.experiment else None,
                "variant": decision.experiment.variant if decision.experiment else None,
                "offers": len(decision.offers),
                "latency_ms": round((logged - started) * 1000, 3),
            },
        )
        return response_json

    def _decide(self, request: DecisionRequest, arm: Arm) -> tuple[Decision, LightGBMScorer | None]:
        """The decision, and the scorer it was offered: the serving models are read once."""
        policy, assignment = arm.policy, arm.assignment
        scorer, degraded = _scorer(policy, self._serving_models(policy))
        source = self.feature_store.current()
        try:
            if source is None:
                raise FeatureStoreUnavailable("not_open")
            declined = self.log.recent_declines(
                request.customer_id, self._decline_cap, deciding=request.invoice_id
            )
            decision = decide(
                request,
                source,
                self.catalog,
                policy=policy,
                scorer=scorer,
                recently_declined=declined,
                experiment=assignment,
                degraded=degraded,
                objective=self.objective,
            )
        except FeatureStoreUnavailable:
            decision = fallback_decision(
                request,
                requested_policy=policy,
                degraded=FEATURE_STORE_UNAVAILABLE,
            )
        return decision, scorer

    def _serving_models(self, policy: str) -> ServingModels:
        """The serving models, with the policy's challenger loaded here if it can be."""
        models = self.models.current
        if (
            policy.startswith(MODEL_PREFIX)
            and models.scorer is not None
            and models.challenger(policy) is None
            and self.challenger_retries.may_try(policy)
        ):
            # The experiment may have been created on another worker, which loaded its
            # challenger there only. A load that fails is logged; the champion then answers,
            # marked degraded.
            try:
                models = self.models.add_challengers([policy])
            except Exception as error:  # a challenger must never turn an invoice into an error
                logger.error(
                    "challenger not loaded",
                    extra={"policy": policy, "error": type(error).__name__},
                )
        return models


def _replayed(stored: StoredDecision, request: DecisionRequest) -> str:
    if stored.customer_id != request.customer_id:
        raise InvoiceCustomerConflict(request.invoice_id)
    return stored.response_json


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


def decision_record(
    decision: Decision,
    decision_id: str,
    response_json: str,
    *,
    churn_model_version: str | None = None,
) -> DecisionRecord:
    """The decision log's record of a decision answered with ``response_json``.

    ``churn_model_version``: the churn model that scored with the ranker the decision names.
    """
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
        log={**decision.log_details(), "churn_model_version": churn_model_version},
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
