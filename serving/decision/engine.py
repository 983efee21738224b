"""One invoice's decision: consent gate → features → candidates → score → guardrails →
arbitration → reasons → usage summary. Pure apart from the injected feature source and scorer,
so the API and the batch invoice run decide alike.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

import numpy as np

from core.catalog import Catalog, Offer
from core.columns import CUSTOMER_KEY
from serving.decision.arbitration import (
    BELOW_ACCEPTANCE_FLOOR,
    BELOW_VALUE_FLOOR,
    DEFAULT_OBJECTIVE,
    NO_VALUE,
    Objective,
    Valued,
    by_expected_value,
    cut,
    floor_block,
    offer_value,
)
from serving.decision.candidates import (
    DECLINED_RECENTLY,
    DOWNGRADE_WHILE_BOUND,
    NO_LOYALTY_GAP,
    NOT_FOR_SEGMENT,
    NOT_IN_GOOD_STANDING,
    PAYMENT_HELP_ONLY,
    TENURE_TOO_SHORT,
    Candidate,
    PlanFit,
    PlanFitTable,
    customer_saving,
    eligibility,
    fee_change,
    offer_matrix,
    plan_fit_matrix,
    shown_price,
)
from serving.decision.consent import Policy, allowed_policy, detail_level
from serving.decision.exploration import choose_slate, explores
from serving.decision.guardrails import (
    ABOVE_NEW_CUSTOMER_PRICE,
    COSTS_MORE_FOR_USAGE,
    UPGRADE_NOT_JUSTIFIED,
    above_new_customer_price,
    customer_benefit,
)
from serving.decision.inputs import (
    Account,
    ConsentState,
    DecisionRequest,
    ExperimentAssignment,
    FeatureSource,
    Locale,
    ManyCustomersSource,
    Scorer,
    UnknownCustomerError,
    has_account,
    usage_as_of,
    usage_rows_as_of,
)
from serving.decision.reasons import Reason, offer_reasons
from serving.decision.rules import non_personalised_offers, rules_order
from serving.decision.scoring import (
    Contribution,
    Scores,
    candidate_ranker_matrix,
    score_many,
    top_contributions,
    top_contributions_many,
)
from serving.decision.usage_summary import UsageSummaryDict, build_usage_summary, insight_plans
from training.model_inputs import CUSTOMER_FEATURES, monitored_inputs

log = logging.getLogger(__name__)

NOT_IN_SEGMENT_LIST = "not_in_segment_list"
MODEL_ERROR = "model_error"
# The eligibility rules, guardrails and floors an evaluation may lift one at a time to measure
# what each costs. Consent, the current plan, validity on the date and a contract that ended (a
# former customer's final invoice) are not rules of choice.
LIFTABLE: frozenset[str] = frozenset(
    {
        NOT_FOR_SEGMENT,
        DECLINED_RECENTLY,
        TENURE_TOO_SHORT,
        DOWNGRADE_WHILE_BOUND,
        PAYMENT_HELP_ONLY,
        NOT_IN_GOOD_STANDING,
        NO_LOYALTY_GAP,
        ABOVE_NEW_CUSTOMER_PRICE,
        UPGRADE_NOT_JUSTIFIED,
        COSTS_MORE_FOR_USAGE,
        BELOW_ACCEPTANCE_FLOOR,
        BELOW_VALUE_FLOOR,
    }
)


@dataclass(frozen=True)
class OfferDecision:
    """One offer as the invoice shows it; ``propensity`` is for the log only."""

    offer_id: str
    rank: int
    kind: str
    title: str
    monthly_fee_sek: float
    acceptance_probability: float | None
    expected_value_sek: float | None
    customer_saving_sek_per_month: float | None
    personalised: bool
    reasons: tuple[Reason, ...]
    contributions: tuple[Contribution, ...]
    propensity: float = 1.0

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "rank": self.rank,
            "kind": self.kind,
            "title": self.title,
            "monthly_fee_sek": self.monthly_fee_sek,
            "acceptance_probability": self.acceptance_probability,
            "expected_value_sek": self.expected_value_sek,
            "customer_saving_sek_per_month": self.customer_saving_sek_per_month,
            "personalised": self.personalised,
            "reasons": [{"code": r.code, "text": r.text} for r in self.reasons],
            "contributions": [
                {"feature": c.feature, "value": c.value, "contribution": c.contribution}
                for c in self.contributions
            ],
        }


# Not frozen: a decision makes one for every catalog offer, and a frozen dataclass's __init__
# costs four times as much (1.4 against 0.34 µs); the engine replaces one rather than change it.
@dataclass(slots=True)
class CandidateRecord:
    """What the engine knew about one catalog offer, for the decision log."""

    offer_id: str
    kind: str
    blocked_by: str | None
    price_sek: float | None = None
    customer_saving_sek_per_month: float | None = None
    # What the offer changes the customer's monthly fees by at the price shown (contract and
    # billing facts, no usage: kept for the segment's fixed list too), for experiment reports.
    fee_change_sek_per_month: float | None = None
    acceptance_probability: float | None = None
    expected_value_sek: float | None = None
    # The objective's value over the horizon before acceptance (arbitration.offer_value).
    value_sek: float | None = None
    rank: int | None = None

    def logged(self) -> dict[str, Any]:
        """The record as the decision log keeps it: ``blocked_by`` always (None: it passed), the
        other figures only where known. Most catalog offers are blocked before anything is
        known of them; leaving out their unknown figures halves the log's ``log`` column."""
        return {
            name: value
            for name in CANDIDATE_RECORD_FIELDS
            if (value := getattr(self, name)) is not None or name == "blocked_by"
        }


CANDIDATE_RECORD_FIELDS = tuple(item.name for item in fields(CandidateRecord))


@dataclass(frozen=True)
class Decision:
    """The POST /v1/offers response except ``decision_id``, plus what the log keeps."""

    invoice_id: str
    customer_id: str
    invoice_date: dt.date
    locale: Locale
    requested_policy: str
    policy: Policy
    model_version: str | None
    experiment: ExperimentAssignment | None
    consent: ConsentState
    offers: tuple[OfferDecision, ...]
    usage_summary: UsageSummaryDict | None
    degraded: str | None
    candidates: tuple[CandidateRecord, ...] = ()
    churn_risk: float | None = None
    explored: bool = False
    # The customer inputs the model scored, as the log keeps them for input monitoring
    # (training.model_inputs.monitored_inputs); None unless the model decided, which needs
    # profiling consent.
    model_inputs: Mapping[str, float | str | None] | None = None

    def to_public_dict(self) -> dict[str, Any]:
        """The POST /v1/offers body (docs/http-api.md) without ``decision_id``, set by the API."""
        return self._body([offer.to_public_dict() for offer in self.offers])

    def to_log_dict(self) -> dict[str, Any]:
        """The response plus propensities, :meth:`log_details` and :meth:`consent_used`."""
        offers = [
            {**offer.to_public_dict(), "propensity": offer.propensity} for offer in self.offers
        ]
        return {**self._body(offers), **self.log_details(), "consent_used": self.consent_used()}

    def log_details(self) -> dict[str, Any]:
        """What the decision was made from beyond the response and the consent: every
        candidate's scores and blocks and the churn risk."""
        return {
            "invoice_date": self.invoice_date.isoformat(),
            "locale": self.locale,
            "requested_policy": self.requested_policy,
            "churn_risk": self.churn_risk,
            "explored": self.explored,
            "candidates": [record.logged() for record in self.candidates],
        }

    def consent_used(self) -> dict[str, Any]:
        return {
            **self._public_consent(),
            "objected": self.consent.objected,
            # Whether the customer counted as an adult, not the age itself: the log keeps no more
            # personal data than the decision needed.
            "adult": self.consent.is_adult,
            "segment": self.consent.segment,
        }

    def _public_consent(self) -> dict[str, bool]:
        return {
            "marketing": self.consent.marketing,
            "profiling": self.consent.profiling,
            "usage_insights": self.consent.usage_insights,
        }

    def _body(self, offers: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            CUSTOMER_KEY: self.customer_id,
            "policy": self.policy,
            "model_version": self.model_version,
            "experiment": None
            if self.experiment is None
            else {"key": self.experiment.key, "variant": self.experiment.variant},
            "consent": self._public_consent(),
            "offers": offers,
            "usage_summary": self.usage_summary,
            "degraded": self.degraded,
        }


@dataclass(frozen=True)
class _Pick:
    """A shown offer before it is worded: the candidate, its probability and value if scored."""

    candidate: Candidate
    acceptance: float | None = None
    expected_value_sek: float | None = None
    propensity: float = 1.0


@dataclass
class _Work:
    """One decision in progress: every catalog offer's record, plan fit, scores, what is picked."""

    policy: Policy
    records: dict[str, CandidateRecord] = field(default_factory=dict)
    fits: dict[str, PlanFit] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    # The candidates' model matrix while it waits for the model (cleared once scored).
    rows: np.ndarray | None = None
    scores: Scores | None = None
    degraded: str | None = None
    picks: list[_Pick] = field(default_factory=list)
    explored: bool = False
    model_inputs: dict[str, float | str | None] | None = None
    # Rules an evaluation lifts to measure what they cost (LIFTABLE); never in a served decision.
    lifted: frozenset[str] = frozenset()
    # Plan fit worked out beforehand for many accounts at once (the invoice run's slice).
    known_fits: PlanFitTable | None = None

    def block(self, code: str | None) -> str | None:
        return None if code in self.lifted else code

    def record(self, offer: Offer, blocked_by: str | None, **values: Any) -> None:
        self.records[offer.offer_id] = CandidateRecord(
            offer_id=offer.offer_id, kind=offer.kind, blocked_by=blocked_by, **values
        )

    def update(self, offer_id: str, **values: Any) -> None:
        self.records[offer_id] = replace(self.records[offer_id], **values)


def _eligible(
    offers: Sequence[Offer],
    account: Account,
    consent: ConsentState,
    request: DecisionRequest,
    recently_declined: frozenset[str],
    work: _Work,
) -> list[Offer]:
    eligible = []
    for offer in offers:
        blocked = eligibility(
            offer,
            account,
            segment=consent.segment,
            invoice_date=request.invoice_date,
            recently_declined=recently_declined,
        )
        blocked = work.block(blocked)
        work.record(offer, blocked)
        if blocked is None:
            eligible.append(offer)
    return eligible


def _passes_guardrails(
    candidate: Candidate,
    account: Account,
    work: _Work,
    objective: Objective,
    **values: Any,
) -> bool:
    """Apply the guardrails and record the candidate with the block, if any."""
    fit = candidate.fit
    blocked = above_new_customer_price(candidate.offer, account, candidate.price_sek) or (
        customer_benefit(
            candidate.offer,
            account,
            offer_overage_sek=None if fit is None else fit.offer_overage_sek,
            current_overage_sek=None if fit is None else fit.current_overage_sek,
            saving_sek=candidate.saving_sek,
            nearly_used_share=objective.upgrade_usage_share,
        )
    )
    blocked = work.block(blocked)
    work.record(
        candidate.offer,
        blocked,
        price_sek=round(candidate.price_sek, 2),
        customer_saving_sek_per_month=candidate.saving_sek,
        fee_change_sek_per_month=fee_change(candidate.offer, account, candidate.price_sek),
        **values,
    )
    return blocked is None


def _candidates(
    request: DecisionRequest,
    profile: dict[str, Any] | None,
    catalog: Catalog,
    account: Account,
    consent: ConsentState,
    scorer: Scorer | None,
    recently_declined: frozenset[str],
    work: _Work,
) -> None:
    """Model or rules, first part: eligible candidates with their plan fit and, for the model,
    the matrix to score (``work.rows``)."""
    eligible = _eligible(catalog.offers, account, consent, request, recently_declined, work)
    # Plan fit once for the candidates and, for a detailed usage summary, the plans it compares.
    fit_offers = list(eligible)
    if detail_level(consent) == "detailed":
        known = {offer.offer_id for offer in eligible}
        fit_offers += [
            plan
            for plan in insight_plans(catalog, account, consent.segment, request.invoice_date)
            if plan.offer_id not in known
        ]
    attributes = offer_matrix(fit_offers)
    fit_rows = plan_fit_matrix(account, attributes, known=work.known_fits, offer_list=fit_offers)
    work.fits = {o.offer_id: PlanFit.from_row(r) for o, r in zip(fit_offers, fit_rows, strict=True)}
    work.candidates = [
        Candidate(
            offer=offer,
            price_sek=shown_price(offer, account),
            fit=work.fits[offer.offer_id],
            saving_sek=customer_saving(offer, account, work.fits[offer.offer_id]),
            row=row,
        )
        for row, offer in enumerate(eligible)
    ]
    if work.policy == "model" and scorer is not None and work.candidates:
        # The profile was read only because the consent gate allowed "model" (adults with
        # profiling consent).
        features = {**account.features, **(profile or {})}
        work.rows = candidate_ranker_matrix(
            features, consent.segment, attributes[: len(eligible)], fit_rows[: len(eligible)]
        )


def _score_all(opened: Sequence[_Open]) -> None:
    """Score every opened decision's candidates, one model call per scorer for all of them. A
    model that fails leaves its decisions to the rules (``fallback``, ``model_error``)."""
    waiting: dict[int, list[tuple[_Open, np.ndarray]]] = {}
    for decision in opened:
        if decision.work.rows is not None:
            waiting.setdefault(id(decision.call.scorer), []).append((decision, decision.work.rows))
    for group in waiting.values():
        scorer = group[0][0].call.scorer
        assert scorer is not None, "only decisions with a scorer have rows to score"
        try:
            scored: list[Scores | None] = list(score_many(scorer, [rows for _, rows in group]))
        except Exception:
            # Each alone, so that an input only one invoice has fails that invoice only.
            scored = [_score_alone(scorer, rows) for _, rows in group]
        for (decision, _), scores in zip(group, scored, strict=True):
            if scores is None:
                decision.work.policy, decision.work.degraded = "rules", MODEL_ERROR
                decision.work.rows = None
                continue
            decision.work.scores, decision.work.rows = scores, None
            # Every candidate row holds the same customer inputs: the first row's suffice.
            decision.work.model_inputs = monitored_inputs(scores.rows[0, : len(CUSTOMER_FEATURES)])


def _score_alone(scorer: Scorer, rows: np.ndarray) -> Scores | None:
    try:
        (scores,) = score_many(scorer, [rows])
    except Exception as error:
        # The error type only: a model's message may quote the feature values it was given.
        log.error("scoring failed (%s); deciding by rules", type(error).__name__)
        return None
    return scores


def _arbitrate(
    request: DecisionRequest, account: Account, work: _Work, objective: Objective
) -> None:
    """Model or rules, second part: guardrails, then the objective's arbitration or the rules."""
    candidates = work.candidates
    scores = work.scores
    if scores is None:
        shown = [c for c in candidates if _passes_guardrails(c, account, work, objective)]
        ordered = rules_order(shown, account)
        work.picks = [_Pick(c) for c in cut(ordered, request.max_offers, _kind)]
        return

    # Retention is valued on what the customer pays now: fee plus the overage they had.
    current_revenue = candidates[0].fit.current_cost_sek if candidates[0].fit else 0.0
    valued = []
    for candidate in candidates:
        p = float(scores.acceptance[candidate.row])
        if not _passes_guardrails(
            candidate, account, work, objective, acceptance_probability=round(p, 4)
        ):
            continue
        terms = offer_value(candidate, account, scores.churn_risk, current_revenue, objective)
        value = round(p * terms.value_sek, 2)
        work.update(
            candidate.offer.offer_id,
            expected_value_sek=value,
            value_sek=round(terms.value_sek, 2),
        )
        blocked = floor_block(p, terms.money_sek, objective)
        if blocked != NO_VALUE:
            blocked = work.block(blocked)
        if blocked is not None:
            work.update(candidate.offer.offer_id, blocked_by=blocked)
        if blocked is None or (blocked != NO_VALUE and value > 0):
            # Below a floor: shown only when the decision explores (see exploration.py).
            valued.append(Valued(candidate, p, value))
    pool = by_expected_value(valued)
    share = objective.exploration_share
    work.explored = explores(request.invoice_id, share)
    slate = choose_slate(
        [v.expected_value_sek for v in pool],
        [_kind(v.candidate) for v in pool],
        request.max_offers,
        greedy_allowed=[work.records[v.candidate.offer.offer_id].blocked_by is None for v in pool],
        explore=work.explored,
        share=share,
        invoice_id=request.invoice_id,
        acceptance=[v.acceptance for v in pool],
        tolerance=objective.value_tolerance,
    )
    work.picks = []
    for index, propensity in zip(slate.items, slate.propensities, strict=True):
        chosen = pool[index]
        work.update(chosen.candidate.offer.offer_id, blocked_by=None)
        work.picks.append(
            _Pick(
                chosen.candidate, round(chosen.acceptance, 4), chosen.expected_value_sek, propensity
            )
        )


def _explain_all(opened: Sequence[_Open]) -> dict[int, list[list[Contribution]]]:
    """The shown offers' contributions per decision (keyed by ``id``), one model call per
    scorer for all of them. Explanations cost most of a decision's time: only the offers shown.
    """
    waiting: dict[int, list[_Open]] = {}
    for decision in opened:
        work = decision.work
        if work.scores is not None and decision.call.scorer is not None and work.picks:
            waiting.setdefault(id(decision.call.scorer), []).append(decision)
    explained: dict[int, list[list[Contribution]]] = {}
    for group in waiting.values():
        scorer = group[0].call.scorer
        assert scorer is not None, "only scored decisions are explained"
        shown_rows = [
            decision.work.scores.rows[[pick.candidate.row for pick in decision.work.picks]]
            for decision in group
            if decision.work.scores is not None
        ]
        try:
            contributions: list[list[list[Contribution]] | None] = list(
                top_contributions_many(scorer, shown_rows)
            )
        except Exception:
            # Each alone, so that an input only one invoice has fails that invoice only.
            contributions = [_explain_alone(scorer, rows) for rows in shown_rows]
        for decision, contributed in zip(group, contributions, strict=True):
            if contributed is None:
                # The model did score and choose these offers, so the policy stays ``model``
                # (unlike a scoring failure, where the rules choose and the answer is
                # ``fallback``); only the explanations are missing, which ``degraded`` says.
                # Reasons then come from the plan-fit facts alone.
                decision.work.degraded = decision.work.degraded or MODEL_ERROR
                continue
            explained[id(decision)] = contributed
    return explained


def _explain_alone(scorer: Scorer, rows: np.ndarray) -> list[list[Contribution]] | None:
    try:
        return top_contributions(scorer, rows)
    except Exception as error:
        # The error type only: a message may quote feature values.
        log.error(
            "explaining offers failed (%s); shown without contributions", type(error).__name__
        )
        return None


def _kind(candidate: Candidate) -> str:
    return candidate.offer.kind


def _non_personalised(
    request: DecisionRequest,
    catalog: Catalog,
    account: Account,
    consent: ConsentState,
    recently_declined: frozenset[str],
    work: _Work,
    objective: Objective,
    scorer: Scorer | None,
) -> None:
    """The segment's fixed list, filtered by contract and billing facts and the guardrails,
    in the order the segment accepted them (``Scorer.segment_acceptance``) when a model is
    loaded, else in catalog order."""
    listed = non_personalised_offers(catalog, consent.segment)
    listed_ids = {offer.offer_id for offer in listed}
    for offer in catalog.offers:
        if offer.offer_id not in listed_ids:
            work.record(offer, NOT_IN_SEGMENT_LIST)
    shown = [
        candidate
        for offer in _eligible(listed, account, consent, request, recently_declined, work)
        if _passes_guardrails(
            candidate := Candidate(
                offer=offer, price_sek=shown_price(offer, account), fit=None, saving_sek=None
            ),
            account,
            work,
            objective,
        )
    ]
    if scorer is not None:
        # The same order for everyone in the segment: what the segment as a whole accepted most
        # when shown first; offers it has no figure for keep their catalog place after those.
        rates = scorer.segment_acceptance(consent.segment)
        shown.sort(key=lambda c: -rates.get(c.offer.offer_id, -1.0))
    work.picks = [_Pick(c) for c in cut(shown, request.max_offers, _kind)]


def _worded(
    picks: Sequence[_Pick],
    contributions: Sequence[Sequence[Contribution]],
    account: Account,
    consent: ConsentState,
    request: DecisionRequest,
    personalised: bool,
) -> tuple[OfferDecision, ...]:
    offers = []
    for rank, (pick, contributed) in enumerate(zip(picks, contributions, strict=True), start=1):
        candidate = pick.candidate
        title = candidate.offer.title.get(request.locale)
        reasons = offer_reasons(
            candidate,
            account,
            title=title,
            locale=request.locale,
            invoice_date=request.invoice_date,
            personalised=personalised,
            segment=consent.segment,
            contributions=contributed,
        )
        offers.append(
            OfferDecision(
                offer_id=candidate.offer.offer_id,
                rank=rank,
                kind=candidate.offer.kind,
                title=title,
                monthly_fee_sek=round(candidate.price_sek, 2),
                acceptance_probability=pick.acceptance,
                expected_value_sek=pick.expected_value_sek,
                customer_saving_sek_per_month=candidate.saving_sek if personalised else None,
                personalised=personalised,
                reasons=tuple(reasons),
                contributions=tuple(contributed),
                propensity=pick.propensity,
            )
        )
    return tuple(offers)


@dataclass(frozen=True)
class DecisionCall:
    """One invoice to decide and what is particular to it; :func:`decide_many` shares the rest.

    ``policy`` is what the caller wants (``model``, ``rules``, ``non_personalised``, ``holdout``,
    ``model:<version>`` with the matching scorer); consent can only lower it. ``degraded`` says
    why a model that was asked for is missing (``scorer`` None then).
    """

    request: DecisionRequest
    policy: str
    scorer: Scorer | None
    recently_declined: frozenset[str] = frozenset()
    experiment: ExperimentAssignment | None = None
    degraded: str | None = None


@dataclass
class _Open:
    """One decision between the engine's steps: read and filtered, waiting for the models."""

    call: DecisionCall
    consent: ConsentState
    allowed: Policy
    account: Account
    work: _Work
    profile: dict[str, Any] | None = None

    @property
    def personalised(self) -> bool:
        return self.work.policy in ("model", "rules")


def decide(
    request: DecisionRequest,
    source: FeatureSource,
    catalog: Catalog,
    *,
    policy: str,
    scorer: Scorer | None,
    recently_declined: frozenset[str],
    experiment: ExperimentAssignment | None = None,
    degraded: str | None = None,
    objective: Objective = DEFAULT_OBJECTIVE,
    lifted: frozenset[str] = frozenset(),
    plan_fits: PlanFitTable | None = None,
) -> Decision:
    """Decide the offers for one invoice: :func:`decide_many` with one invoice.

    A model request without a scorer is decided by rules: reported as ``rules`` when there is no
    model yet (``degraded`` None), as ``fallback`` when ``degraded`` says why the model is
    missing. A model that fails while scoring is likewise decided by rules, reported as
    ``fallback`` with ``degraded`` ``model_error``. Raises :class:`UnknownCustomerError` when the
    feature store has never seen the customer, and whatever the feature source raises.
    """
    call = DecisionCall(request, policy, scorer, recently_declined, experiment, degraded)
    (outcome,) = decide_many(
        [call], source, catalog, objective=objective, lifted=lifted, plan_fits=plan_fits
    )
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def decide_many(
    calls: Sequence[DecisionCall],
    source: FeatureSource,
    catalog: Catalog,
    *,
    objective: Objective = DEFAULT_OBJECTIVE,
    lifted: frozenset[str] = frozenset(),
    plan_fits: PlanFitTable | None = None,
) -> list[Decision | Exception]:
    """Decide many invoices at once, each as it would be decided alone, in order.

    Each step runs for every invoice before the next: consent, features, candidates and plan fit;
    then one acceptance call and one churn call for all the invoices a model scores; guardrails
    and arbitration; one ``pred_contrib`` call for all the offers shown; reasons and the usage
    summary. An invoice whose features cannot be read is answered with the exception its read
    raised (:class:`UnknownCustomerError` for a customer the store has never seen); the others
    are decided all the same.

    ``objective`` holds the arbitration's weights, horizon and floors and the upgrade threshold
    (``Objective.from_settings``). ``lifted`` names eligibility rules, guardrails and floors
    (``LIFTABLE``) to leave out, for ``offers evaluate``'s ablation only; consent never is.
    ``plan_fits``: plan fit worked out beforehand for many invoices' accounts at once (the
    invoice run's slice); the decisions read their rows there, the same numbers they would work
    out.
    """
    unknown = lifted - LIFTABLE
    if unknown:
        raise ValueError(f"rules that cannot be lifted: {sorted(unknown)}")
    opened = _accounts(_read_all(calls, source, lifted, plan_fits))
    live = [decision for decision in opened if isinstance(decision, _Open)]
    for decision in live:
        if decision.work.policy == "non_personalised":
            call = decision.call
            _non_personalised(
                call.request,
                catalog,
                decision.account,
                decision.consent,
                call.recently_declined,
                decision.work,
                objective,
                call.scorer,
            )
    personalised = [decision for decision in live if decision.personalised]
    if plan_fits is None and len(live) > 1:
        # Plan fit against the catalog for all the accounts at once (candidates and usage
        # summaries): the numbers each decision would work out alone, in one numpy pass instead
        # of one per invoice.
        plan_fits = PlanFitTable((decision.account.features for decision in live), catalog.offers)
    for decision in personalised:
        decision.work.known_fits = plan_fits
        _candidates(
            decision.call.request,
            decision.profile,
            catalog,
            decision.account,
            decision.consent,
            decision.call.scorer,
            decision.call.recently_declined,
            decision.work,
        )
        decision.profile = None  # read for the model matrix only
    _score_all(live)
    for decision in personalised:
        _arbitrate(decision.call.request, decision.account, decision.work, objective)
    explained = _explain_all(live)
    return [
        decision
        if isinstance(decision, Exception)
        else _finish(decision, explained.get(id(decision)), catalog, plan_fits)
        for decision in opened
    ]


@dataclass
class _Read:
    """One decision's consent and feature rows, read."""

    call: DecisionCall
    consent: ConsentState
    allowed: Policy
    work: _Work
    account_row: Mapping[str, Any]
    profile: dict[str, Any] | None


def _read_all(
    calls: Sequence[DecisionCall],
    source: FeatureSource,
    lifted: frozenset[str],
    plan_fits: PlanFitTable | None,
) -> list[_Read | Exception]:
    """Each invoice's consent, then the feature rows its consent allows: for many invoices from
    a store that reads many customers at once, one read per kind of row for all of them."""
    if len(calls) > 1 and isinstance(source, ManyCustomersSource):
        return _read_together(calls, source, lifted, plan_fits)
    read: list[_Read | Exception] = []
    for call in calls:
        try:
            read.append(_read(call, source, lifted, plan_fits))
        except Exception as error:  # this invoice's answer; the caller says what it means
            # Without its traceback, which would hold this frame and so every invoice's rows.
            read.append(error.with_traceback(None))
    return read


def _read(
    call: DecisionCall,
    source: FeatureSource,
    lifted: frozenset[str],
    plan_fits: PlanFitTable | None,
) -> _Read:
    """Consent first, then the feature rows the consent allows."""
    customer_id = call.request.customer_id
    consent_row = source.read_consent(customer_id)
    if consent_row is None:
        raise UnknownCustomerError(customer_id)
    consent, allowed, work = _gate(call, consent_row, lifted, plan_fits)
    profile: dict[str, Any] | None = None
    if work.policy == "model":
        # Only here may the profile be read; with the account in one read, one store round trip
        # fewer for the decisions that cost most.
        account_row, profile = source.read_account_and_profile(customer_id)
    else:
        account_row = source.read_account(customer_id)
    return _Read(call, consent, allowed, work, account_row, profile)


def _read_together(
    calls: Sequence[DecisionCall],
    source: ManyCustomersSource,
    lifted: frozenset[str],
    plan_fits: PlanFitTable | None,
) -> list[_Read | Exception]:
    """:func:`_read` for many invoices: all consents in one read, then in one read each the
    accounts with profiles of those the consent gate lets the model decide (only theirs) and the
    others' accounts."""
    try:
        consent_rows = source.read_consents([call.request.customer_id for call in calls])
    except Exception as error:
        # The store failed the read: every invoice answers as it would have alone.
        return [error.with_traceback(None)] * len(calls)
    read: list[_Read | Exception] = []
    for call, consent_row in zip(calls, consent_rows, strict=True):
        if consent_row is None:
            read.append(UnknownCustomerError(call.request.customer_id))
            continue
        consent, allowed, work = _gate(call, consent_row, lifted, plan_fits)
        read.append(_Read(call, consent, allowed, work, account_row={}, profile=None))
    gated = [item for item in read if isinstance(item, _Read)]
    by_model = [item for item in gated if item.work.policy == "model"]
    others = [item for item in gated if item.work.policy != "model"]
    try:
        with_profiles = source.read_accounts_and_profiles(
            [item.call.request.customer_id for item in by_model]
        )
        accounts = source.read_accounts([item.call.request.customer_id for item in others])
    except Exception as error:
        # The store failed after the consents: the customers it knows answer with the failure,
        # as each would have alone; an unknown customer stays unknown.
        failed = error.with_traceback(None)
        return [failed if isinstance(item, _Read) else item for item in read]
    for item, (account_row, profile) in zip(by_model, with_profiles, strict=True):
        item.account_row, item.profile = account_row, profile
    for item, account_row in zip(others, accounts, strict=True):
        item.account_row = account_row
    return read


def _gate(
    call: DecisionCall,
    consent_row: Mapping[str, Any],
    lifted: frozenset[str],
    plan_fits: PlanFitTable | None,
) -> tuple[ConsentState, Policy, _Work]:
    """The consent gate: the policy consent allows, and the decision's work under it."""
    consent = ConsentState.from_features(consent_row, call.request.invoice_date)
    allowed = allowed_policy(call.policy, consent)
    work = _Work(
        policy="rules" if allowed == "model" and call.scorer is None else allowed,
        lifted=lifted,
        known_fits=plan_fits,
    )
    return consent, allowed, work


def _accounts(read: Sequence[_Read | Exception]) -> list[_Open | Exception]:
    """Each read decision's account as of its invoice's billing period.

    One rule for time, in the API and the batch alike: the invoice describes its billing period,
    never a month that had not ended on its date. The rows are moved back together, over arrays,
    whatever their invoice dates (each the row's own ``usage_as_of``)."""
    read = [
        item
        if isinstance(item, Exception) or has_account(item.account_row)
        else UnknownCustomerError(item.call.request.customer_id)
        for item in read
    ]
    positions = [position for position, item in enumerate(read) if isinstance(item, _Read)]
    opened = [cast(_Read, read[position]) for position in positions]
    moved = usage_rows_as_of(
        [item.account_row for item in opened], [item.call.request.invoice_date for item in opened]
    )
    accounts = {
        position: Account.from_features(row) for position, row in zip(positions, moved, strict=True)
    }
    return [
        item
        if isinstance(item, Exception)
        else _Open(
            call=item.call,
            consent=item.consent,
            allowed=item.allowed,
            account=accounts[position],
            work=item.work,
            profile=item.profile,
        )
        for position, item in enumerate(read)
    ]


def _finish(
    opened: _Open,
    explained: list[list[Contribution]] | None,
    catalog: Catalog,
    plan_fits: PlanFitTable | None,
) -> Decision:
    """Reasons, the usage summary and the answer."""
    call, work, consent, account = opened.call, opened.work, opened.consent, opened.account
    request, scorer = call.request, call.scorer
    personalised = opened.personalised
    contributions = explained if explained is not None else [[] for _ in work.picks]
    offers = _worded(work.picks, contributions, account, consent, request, personalised)
    for offer in offers:
        work.update(offer.offer_id, rank=offer.rank)

    summary = build_usage_summary(
        account,
        catalog,
        locale=request.locale,
        detail_level=detail_level(consent),
        segment=consent.segment,
        invoice_date=request.invoice_date,
        plan_fits=work.fits or None,
        known_fits=plan_fits,
    )
    # The model's version whenever the model policy decided, also when no offer was eligible and
    # nothing needed scoring: the answer names what would have ranked.
    scored = work.policy == "model" and scorer is not None
    policy_used: Policy = work.policy
    if opened.allowed == "model" and work.policy == "rules" and (call.degraded or work.degraded):
        # A model was asked for and allowed, but it was down or failed: the rules chose the
        # offers (kept), and the policy says a part was down (docs/http-api.md, degraded
        # answers). With no model yet (nothing degraded) the rules are the policy.
        policy_used = "fallback"
    return Decision(
        invoice_id=request.invoice_id,
        customer_id=request.customer_id,
        invoice_date=request.invoice_date,
        locale=request.locale,
        requested_policy=call.policy,
        policy=policy_used,
        model_version=scorer.model_version if scored and scorer is not None else None,
        # Only customers who may be marketed to are enrolled: a customer without marketing
        # consent, or who objected, is in no experiment (and in no report).
        experiment=None if opened.allowed == "none" else call.experiment,
        consent=consent,
        offers=offers,
        usage_summary=summary,
        degraded=call.degraded or work.degraded,
        candidates=tuple(
            work.records[offer.offer_id]
            for offer in catalog.offers
            if offer.offer_id in work.records
        ),
        churn_risk=None if work.scores is None else round(work.scores.churn_risk, 4),
        explored=work.explored,
        model_inputs=work.model_inputs,
    )


def summarise_usage(
    customer_id: str,
    source: FeatureSource,
    catalog: Catalog,
    *,
    invoice_date: dt.date,
    locale: Locale,
) -> UsageSummaryDict:
    """GET /v1/customers/{id}/usage-summary: consent (for the detail level) and account only."""
    consent_row = source.read_consent(customer_id)
    if consent_row is None:
        raise UnknownCustomerError(customer_id)
    consent = ConsentState.from_features(consent_row, invoice_date)
    account_row = source.read_account(customer_id)
    if not has_account(account_row):
        raise UnknownCustomerError(customer_id)
    account = Account.from_features(usage_as_of(account_row, invoice_date))
    return build_usage_summary(
        account,
        catalog,
        locale=locale,
        detail_level=detail_level(consent),
        segment=consent.segment,
        invoice_date=invoice_date,
    )


def fallback_decision(
    request: DecisionRequest,
    *,
    requested_policy: str,
    degraded: str,
) -> Decision:
    """The answer when features cannot be read: no offers, no summary, policy ``fallback``.

    Consent is unknown, so it counts as not granted, and the customer is enrolled in no
    experiment.
    """
    return Decision(
        invoice_id=request.invoice_id,
        customer_id=request.customer_id,
        invoice_date=request.invoice_date,
        locale=request.locale,
        requested_policy=requested_policy,
        policy="fallback",
        model_version=None,
        experiment=None,
        consent=ConsentState(
            marketing=False,
            profiling=False,
            usage_insights=False,
            objected=False,
            age=None,
            segment="",
        ),
        offers=(),
        usage_summary=None,
        degraded=degraded,
    )
