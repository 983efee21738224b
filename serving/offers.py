"""Offers for invoices: the experiment arm, the scorer, the decision and its durable record.

One function, :meth:`OffersService.answer_many`, answers a list of invoices: ``POST /v1/offers``
calls it with one, ``POST /v1/offers/batch`` with up to 500 and the invoice run with a billing
date's invoices, part after part. It decides every invoice first, then writes all new decisions
in one transaction; a customer's several new invoices in one call are decided in rounds, one
transaction each, so that each sees the one before it in the log, as if sent one after another.

The same invoice_id always gets the same answer: a decision stored for it is replayed, and a new
one is recorded in the decision log before it is answered. A provisional decision (degraded and
without offers, as when the feature store was down) is the exception: a later request decides
afresh, and a decision that is not provisional replaces it in the log. Nothing here knows HTTP:
an answer is the JSON that was stored, and the other outcomes are raised as
:class:`InvoiceCustomerConflict` and :class:`~serving.decision.inputs.UnknownCustomerError`.

A dry run decides the same way but logs, counts and stores nothing: its answer says
``"dry_run": true``, and since its decision_id is in no log, no event can refer to it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.catalog import Catalog
from serving.decision.arbitration import DEFAULT_OBJECTIVE, Objective
from serving.decision.candidates import PlanFitTable
from serving.decision.consent import MODEL_PREFIX
from serving.decision.engine import Decision, DecisionCall, decide_many, fallback_decision
from serving.decision.inputs import (
    DecisionRequest,
    ExperimentAssignment,
    FeatureSource,
    UnknownCustomerError,
)
from serving.decision_log import DecisionLog, DecisionRecord, LoggedOffer, StoredDecision
from serving.decision_log.ids import new_decision_id
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


class RenderAnswer(Protocol):
    """The answer's JSON for a decision and its decision_id, stored as it is sent; a dry run's
    answer says so."""

    def __call__(self, decision: Decision, decision_id: str, *, dry_run: bool = False) -> str: ...


@dataclass(frozen=True)
class InvoiceAnswer:
    """An invoice's answer, and whether it is the invoice's decision in the log (new or replayed)
    or a dry run's, stored nowhere; ``written``: this call wrote it (a new decision)."""

    answer_json: str
    stored: bool
    written: bool = False


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

InvoiceRefusal = InvoiceCustomerConflict | UnknownCustomerError
"""Why an invoice got no decision: decided for another customer (409), or an unknown customer
(404)."""
InvoiceOutcome = InvoiceAnswer | InvoiceRefusal
"""The answer, or why there is none."""


def api_decision_id(request: DecisionRequest) -> str:
    """The API's id of a new decision: a UUIDv7, in the order the log writes them."""
    return new_decision_id()


class ReadyFeatures:
    """A feature source that is always open and reads memory: the invoice run's frames."""

    def __init__(self, source: FeatureSource) -> None:
        self.source = source

    def current(self) -> FeatureSource:
        return self.source


@dataclass(frozen=True)
class _Undecided:
    """An invoice of the call to decide: no decision stored for it, or a provisional one."""

    index: int
    request: DecisionRequest
    previous: StoredDecision | None
    dry_run: bool
    arm: Arm


@dataclass
class _NewDecision:
    """A decision made in this call, waiting for the one write of its round."""

    index: int
    request: DecisionRequest
    record: DecisionRecord
    superseding: str | None
    churn_model_version: str | None
    decide_seconds: float


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
    """Answers one invoice: replays its stored decision, or decides, records and (given metrics)
    counts one."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        models: ModelHolder,
        log: DecisionLog,
        experiments: Experiments,
        feature_store: OpenFeatureStore | ReadyFeatures,
        metrics: ApiMetrics | None,
        render: RenderAnswer,
        decline_cap_invoices: int,
        objective: Objective = DEFAULT_OBJECTIVE,
        challenger_retries: ChallengerRetries | None = None,
        invoice_date_window_days: tuple[int, int] = (400, 62),
        decision_ids: Callable[[DecisionRequest], str] = api_decision_id,
        declined_elsewhere: Mapping[str, frozenset[str]] | None = None,
        plan_fits: PlanFitTable | None = None,
    ) -> None:
        """``decision_ids`` names each new decision (the API: a UUIDv7; the invoice run: the
        run's id of the invoice; see :mod:`serving.decision_log.ids`). ``declined_elsewhere``:
        per invoice id, offers that declines the log does not hold block (the invoice run's
        ``offer_events``, a customer's later invoice of the day reaching as many fewer back as
        are decided before it), on top of the log's.
        ``plan_fits``: plan fit worked out beforehand for the accounts to decide (the invoice
        run's slice); the decisions read their rows there (see ``decide``).
        ``metrics`` None: new decisions are neither counted nor logged line by line (the invoice
        run and the experiment simulation, which count their decisions themselves)."""
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
        self._decision_ids = decision_ids
        self._declined_elsewhere = declined_elsewhere or {}
        self._plan_fits = plan_fits
        # A SQLite file or memory database: choosing an arm or replaying never waits on another
        # machine. The log's database does not change while the service runs.
        self.log_is_local = log.is_local
        # Batches against a local log are decided one at a time. Everything a batch does then
        # runs in this process, holding the GIL but for the SQLite calls: two batches decided at
        # once on the worker's core take as long as one after the other, only both finish late,
        # and a worker offered more batches than it can decide switched between dozens of them.
        # Measured with batches of 100 offered past capacity (one worker, one core): 12.4–14.5
        # answered a second and the slowest after 6–10 s; one at a time 14.0–15.5 a second and
        # the slowest after 2.3–2.4 s. Waiting batches wait in their threads, off the core.
        self._one_batch = threading.Lock() if self.log_is_local else None

    def invoice_date_problem(
        self, day: dt.date, today: dt.date, *, bound_past: bool = True
    ) -> str | None:
        """Why an invoice date is refused, or None: it must lie in a window around today, so that
        no request can move a decision (or a customer's age) far into the past or future.
        Without ``bound_past`` only its future end holds (a usage summary of an old invoice is
        the customer's own data, printed again)."""
        back, ahead = self.invoice_date_window_days
        earliest, latest = today - dt.timedelta(days=back), today + dt.timedelta(days=ahead)
        if not bound_past and day <= latest:
            return None
        if earliest <= day <= latest:
            return None
        if not bound_past:
            return (
                f"invoice_date {day.isoformat()} is after {latest.isoformat()} "
                f"({ahead} days ahead of today)"
            )
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
        if isinstance(self.feature_store, ReadyFeatures):
            features_wait = False
        else:
            features = self.feature_store.source
            features_wait = (
                features is None or not features.bounds_reads or features.recently_failed
            )
        if features_wait:  # a store that needs a watchdog, or a hanging one: overlap in threads
            return False
        if arm.policy.startswith(MODEL_PREFIX):
            models = self.models.current
            return models.scorer is None or models.challenger(arm.policy) is not None
        return True

    def answer(
        self, request: DecisionRequest, arm: Arm | None = None, *, dry_run: bool = False
    ) -> str:
        """The invoice's answer as JSON: the stored one, or a new decision recorded first.

        ``dry_run``: a stored decision is replayed all the same (it is the invoice's decision);
        otherwise the decision is answered, marked as a dry run, and neither logged, counted nor
        stored, so the invoice's first real request decides as if it had not happened.

        ``arm`` None: chosen here. Raises :class:`InvoiceCustomerConflict` when the invoice was
        decided for another customer, and ``UnknownCustomerError`` for a customer the feature
        store has never seen.
        """
        return self._one(request, arm, dry_run=dry_run).answer_json

    def preview(self, invoice_id: str, request: DecisionRequest | None) -> InvoiceAnswer | None:
        """The invoice's stored decision, or else a dry run of ``request``; None when there is no
        stored decision and no request to decide. Raises as :meth:`answer` does, and
        :class:`InvoiceCustomerConflict` when the stored decision is another customer's."""
        stored = self.log.find(invoice_id)
        if stored is not None and not stored.provisional:
            if request is not None and stored.customer_id != request.customer_id:
                raise InvoiceCustomerConflict(request.invoice_id)
            return InvoiceAnswer(stored.response_json, stored=True)
        if request is None:
            return None
        return self._one(request, None, dry_run=True)

    def _one(self, request: DecisionRequest, arm: Arm | None, *, dry_run: bool) -> InvoiceAnswer:
        (answered,) = self.answer_many(
            [request], None if arm is None else [arm], dry_runs=[dry_run]
        )
        if isinstance(answered, Exception):
            raise answered
        return answered

    def answer_batch(
        self, requests: Sequence[DecisionRequest], dry_runs: Sequence[bool]
    ) -> list[InvoiceOutcome]:
        """:meth:`answer_many` for one ``POST /v1/offers/batch`` call: against a local log, one
        batch at a time."""
        if self._one_batch is None:
            return self.answer_many(requests, dry_runs=dry_runs)
        with self._one_batch:
            return self.answer_many(requests, dry_runs=dry_runs)

    def answer_many(
        self,
        requests: Sequence[DecisionRequest],
        arms: Sequence[Arm] | None = None,
        dry_runs: Sequence[bool] | None = None,
    ) -> list[InvoiceOutcome]:
        """Each invoice's answer, in order: the stored one, or a new decision; new decisions are
        recorded before any is answered.

        Each invoice is answered as it would be if the invoices were sent alone, one after another
        in the order given. The order matters only for a customer's several new invoices: the
        decline cap counts the customer's latest invoices in the log, so each must see the
        decisions of the ones listed before it. The order given, not the invoice date: the batch
        route answers each item as ``POST /v1/offers`` would, in the order given (an invoice given
        twice is answered with the first one's decision), the waiting single requests are decided
        in the order they arrived, and a caller that wants the date order sorts its list. Such
        invoices are decided in rounds (:func:`_rounds`): a round decides at most one invoice per
        customer for real, all in one engine call, and records its decisions in one transaction
        before the next round reads the decline cap. Without a customer's invoice after one of the
        customer's decided for real (a renderer sending one invoice per customer), or with a
        decline cap of no invoices, there is one round: one engine call and one durable write
        for the whole call.

        A stored provisional decision is decided afresh; the new decision replaces it when it is
        not provisional itself, else the stored answer stands. An invoice asked twice in one call
        is answered the second time as the first (a conflict when the customers differ).

        ``dry_runs``: per invoice, whether it is a dry run (see :meth:`answer`); one that an earlier
        request of the call decides for real is answered with that decision.

        ``arms`` None: each chosen here. An invoice decided for another customer is answered with
        :class:`InvoiceCustomerConflict`, one whose customer the feature store has never seen with
        ``UnknownCustomerError``; the others are answered all the same. A database that cannot
        store a round's decisions (or read its decline cap) raises, and none of that round's nor
        a later round's is stored; an earlier round's stay stored, replayed when asked again.
        """
        answers: list[InvoiceOutcome] = []
        start = 0
        while start < len(requests):
            # An ask for another customer than the same call's first ask of that invoice: who the
            # invoice is for by then depends on how the first ask ended (decided, an unknown
            # customer, a provisional decision replaced), so the items before it are answered
            # and stored first, and the rest reads the log as it is then, as if sent afterwards.
            cut = _asked_again_by_another(
                requests[start:], None if dry_runs is None else dry_runs[start:]
            )
            end = len(requests) if cut is None else start + cut
            answers += self._answer_part(
                requests[start:end],
                None if arms is None else arms[start:end],
                None if dry_runs is None else dry_runs[start:end],
            )
            start = end
        return answers

    def _answer_part(
        self,
        requests: Sequence[DecisionRequest],
        arms: Sequence[Arm] | None,
        dry_runs: Sequence[bool] | None,
    ) -> list[InvoiceOutcome]:
        """:meth:`answer_many` for items none of which asks an invoice for another customer than
        an earlier item of them did."""
        started = time.perf_counter()
        stored = self.log.find_many([request.invoice_id for request in requests])
        found_seconds = time.perf_counter() - started
        answers: list[InvoiceOutcome | None] = [None] * len(requests)
        first_asked: dict[str, int] = {}
        repeats: list[int] = []
        waiting: list[_Undecided] = []
        for index, request in enumerate(requests):
            dry_run = dry_runs is not None and dry_runs[index]
            if request.invoice_id in first_asked:
                repeats.append(index)
                continue
            if not dry_run:  # a dry run is nobody's decision to repeat
                first_asked[request.invoice_id] = index
            previous = stored.get(request.invoice_id)
            if previous is not None:
                if previous.customer_id != request.customer_id:
                    answers[index] = InvoiceCustomerConflict(request.invoice_id)
                    continue
                if not previous.provisional:
                    answers[index] = InvoiceAnswer(previous.response_json, stored=True)
                    continue
            arm = arms[index] if arms is not None else None
            waiting.append(
                _Undecided(
                    index,
                    request,
                    previous,
                    dry_run,
                    arm or self.arm(request.customer_id, request.invoice_date),
                )
            )
        for undecided in _rounds(waiting, self._decline_cap):
            self._decide_round(undecided, answers, found_seconds)
        for index in repeats:
            answers[index] = _repeated(requests, index, answers, first_asked, stored)
        complete = [answer for answer in answers if answer is not None]
        assert len(complete) == len(requests), "every invoice is answered"
        return complete

    def _decide_round(
        self,
        undecided: Sequence[_Undecided],
        answers: list[InvoiceOutcome | None],
        found_seconds: float,
    ) -> None:
        """Decide one round's invoices (at most one per customer for real) in one engine call,
        record the new decisions in one transaction and set their answers in ``answers``.

        Each invoice's decline cap is read from the log as it is now, with the earlier rounds'
        decisions in it. ``found_seconds``: the call's look-up of stored decisions, counted in
        each decision's look-up with the round's read of the decline cap."""
        reading = time.perf_counter()
        declines = self.log.recent_declines_many(
            [(item.request.customer_id, item.request.invoice_id) for item in undecided],
            self._decline_cap,
        )
        lookup = found_seconds + time.perf_counter() - reading
        deciding = time.perf_counter()
        outcomes = self._decide_many(
            [
                (
                    item.request,
                    item.arm,
                    declines.get((item.request.customer_id, item.request.invoice_id), frozenset()),
                )
                for item in undecided
            ]
        )
        # The invoices were decided together: each is counted an equal share of the time.
        decide_seconds = (time.perf_counter() - deciding) / max(len(undecided), 1)
        new: list[_NewDecision] = []
        for item, (outcome, scorer) in zip(undecided, outcomes, strict=True):
            index, request, previous = item.index, item.request, item.previous
            if isinstance(outcome, UnknownCustomerError):
                answers[index] = outcome
                continue
            decision = outcome
            decision_id = self._decision_ids(request)
            if item.dry_run:
                answers[index] = InvoiceAnswer(
                    self._render(decision, decision_id, dry_run=True), stored=False
                )
                continue
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
            if previous is not None and record.provisional:
                # Still degraded without offers: the stored answer says as much, and one copy
                # will do.
                answers[index] = InvoiceAnswer(previous.response_json, stored=True)
                continue
            new.append(
                _NewDecision(
                    index=index,
                    request=request,
                    record=record,
                    superseding=None if previous is None else previous.decision_id,
                    churn_model_version=churn_model_version,
                    decide_seconds=decide_seconds,
                )
            )
        if not new:  # replays, refusals and dry runs: nothing to write
            return
        writing = time.perf_counter()
        written = self.log.record_many([(made.record, made.superseding) for made in new])
        write = time.perf_counter() - writing
        for made, (kept, created) in zip(new, written, strict=True):
            if not created:  # another request for this invoice committed first: answer with that
                answers[made.index] = (
                    InvoiceAnswer(kept.response_json, stored=True)
                    if kept.customer_id == made.request.customer_id
                    else InvoiceCustomerConflict(made.request.invoice_id)
                )
                continue
            answers[made.index] = InvoiceAnswer(
                made.record.response_json, stored=True, written=True
            )
            if self.metrics is not None:
                self._count(self.metrics, made, lookup=lookup, write=write)

    def _count(
        self, metrics: ApiMetrics, item: _NewDecision, *, lookup: float, write: float
    ) -> None:
        """Metrics and the log line of one new decision; the look-up and the write are its
        round's, shared by the round's decisions."""
        record = item.record
        total = lookup + item.decide_seconds + write
        metrics.decisions.labels(record.policy).inc()
        if record.degraded:
            metrics.degraded.labels(record.degraded).inc()
        metrics.observe_steps(
            {"lookup": lookup, "decide": item.decide_seconds, "log": write, "total": total}
        )
        logger.info(
            "decision",
            extra={
                "decision_id": record.decision_id,
                "policy": record.policy,
                "model_version": record.model_version,
                "churn_model_version": item.churn_model_version,
                "degraded": record.degraded,
                "supersedes": item.superseding,
                "experiment": record.experiment_key,
                "variant": record.experiment_variant,
                "offers": len(record.offers),
                "latency_ms": round(total * 1000, 3),
            },
        )

    def _decide_many(
        self, invoices: Sequence[tuple[DecisionRequest, Arm, frozenset[str]]]
    ) -> list[tuple[Decision | UnknownCustomerError, LightGBMScorer | None]]:
        """Each invoice's decision (or the unknown customer), and the scorer it was offered: the
        serving models are read once per invoice. All are decided in one engine call, so the
        models score them together. Per invoice: the request, its arm, and the offers the log's
        declines block for it."""
        if not invoices:  # replays only: the feature store is not touched
            return []
        calls: list[DecisionCall] = []
        scorers: list[LightGBMScorer | None] = []
        for request, arm, logged_declines in invoices:
            policy = arm.policy
            scorer, degraded = _scorer(policy, self._serving_models(policy))
            declined = logged_declines | self._declined_elsewhere.get(
                request.invoice_id, frozenset()
            )
            calls.append(DecisionCall(request, policy, scorer, declined, arm.assignment, degraded))
            scorers.append(scorer)
        source = self.feature_store.current()
        outcomes: list[Decision | Exception] = (
            [FeatureStoreUnavailable("not_open")] * len(calls)
            if source is None
            else decide_many(
                calls,
                source,
                self.catalog,
                objective=self.objective,
                plan_fits=self._plan_fits,
            )
        )
        decided: list[tuple[Decision | UnknownCustomerError, LightGBMScorer | None]] = []
        for call, outcome, scorer in zip(calls, outcomes, scorers, strict=True):
            if isinstance(outcome, FeatureStoreUnavailable):
                outcome = fallback_decision(
                    call.request,
                    requested_policy=call.policy,
                    degraded=FEATURE_STORE_UNAVAILABLE,
                )
            elif isinstance(outcome, Exception) and not isinstance(outcome, UnknownCustomerError):
                raise outcome
            decided.append((outcome, scorer))
        return decided

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


def _rounds(undecided: Sequence[_Undecided], decline_cap: int) -> list[list[_Undecided]]:
    """The invoices to decide in rounds, so that each is decided after the customer's invoices
    before it in the call are recorded, as if the call's invoices were sent one after another.

    An invoice's round is the number of the customer's invoices before it that are decided for
    real, so a round holds at most one of those per customer. A dry run is stored nowhere: it
    waits for the customer's invoices before it like any other, but no invoice after it waits for
    it. Within a round the invoices keep the call's order. Without a customer's invoice after one
    of the customer's decided for real there is one round, and with a ``decline_cap`` of no
    invoices (no decision then changes what another may show) there is one too.
    """
    if decline_cap <= 0:
        return [list(undecided)] if undecided else []
    rounds: list[list[_Undecided]] = []
    decided_before: dict[str, int] = {}
    for item in undecided:
        customer = item.request.customer_id
        place = decided_before.get(customer, 0)
        if place == len(rounds):
            rounds.append([])
        rounds[place].append(item)
        if not item.dry_run:
            decided_before[customer] = place + 1
    return rounds


def _asked_again_by_another(
    requests: Sequence[DecisionRequest], dry_runs: Sequence[bool] | None
) -> int | None:
    """The first item that asks an invoice for another customer than an earlier real ask of it
    in the same call did; None when there is none."""
    customers: dict[str, str] = {}
    for index, request in enumerate(requests):
        customer = customers.get(request.invoice_id)
        if customer is not None and customer != request.customer_id:
            return index
        if customer is None and not (dry_runs is not None and dry_runs[index]):
            customers[request.invoice_id] = request.customer_id
    return None


def _repeated(
    requests: Sequence[DecisionRequest],
    index: int,
    answers: Sequence[InvoiceOutcome | None],
    first_asked: Mapping[str, int],
    stored: Mapping[str, StoredDecision],
) -> InvoiceOutcome:
    """The answer to an invoice asked again in one call for the customer its first real ask
    named (:func:`_asked_again_by_another` splits the call at an ask for another): the first
    time's answer, or a conflict when the invoice is stored for another customer."""
    request = requests[index]
    first = first_asked[request.invoice_id]
    previous = stored.get(request.invoice_id)
    if previous is not None and request.customer_id != previous.customer_id:
        return InvoiceCustomerConflict(request.invoice_id)
    answered = answers[first]
    assert answered is not None
    if isinstance(answered, InvoiceAnswer) and answered.written:
        return InvoiceAnswer(answered.answer_json, stored=True)  # written once, by the first
    return answered


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
        model_inputs=decision.model_inputs,
        offers=tuple(
            LoggedOffer(
                offer_id=offer.offer_id,
                rank=offer.rank,
                propensity=offer.propensity,
                score=offer.expected_value_sek,
                acceptance=offer.acceptance_probability,
            )
            for offer in decision.offers
        ),
    )
