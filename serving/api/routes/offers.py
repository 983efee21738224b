"""Offers: one decision per invoice, logged durably before it is answered (role renderer).

``POST /v1/offers`` answers one invoice, ``POST /v1/offers/batch`` up to 500; both through
:meth:`serving.offers.OffersService.answer_many`, so an item of a batch is decided, stored and
replayed exactly as the same body sent alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from serving.api.deps import OffersDep, RendererRole, WaitingDep
from serving.api.errors import (
    ProblemError,
    field_errors,
    invoice_date_out_of_range,
    problem_json,
    problem_responses,
    validation_detail,
)
from serving.api.schemas import OffersBatchRequest, OffersBatchResponse, OffersRequest
from serving.decision.inputs import DecisionRequest, UnknownCustomerError
from serving.offers import (
    Arm,
    InvoiceAnswer,
    InvoiceCustomerConflict,
    InvoiceOutcome,
    OffersService,
)
from serving.offers_response import OffersResponse

router = APIRouter(prefix="/v1", tags=["offers"])


@router.post(
    "/offers",
    response_model=OffersResponse,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
)
async def decide_offers(
    body: OffersRequest, offers: OffersDep, waiting: WaitingDep, _: RendererRole
) -> Response:
    """Decide the offers for one invoice; the same invoice_id always gets the same decision.

    With `"dry_run": true` the decision is answered but logged, counted and stored nowhere."""
    request = decision_request(body, offers, dt.datetime.now(dt.UTC).date())
    # On the event loop only when nothing on the path can wait: choosing the arm may read the
    # experiments from the log, and a slow database, store or registry must never stall the loop.
    # There, requests that arrive together are decided together (serving.api.together).
    dry_run = body.dry_run
    if offers.log_is_local:
        arm = offers.arm(request.customer_id, request.invoice_date)
        if offers.answers_without_waiting(arm):
            return _response(await waiting.answer(request, arm, dry_run))
        return await run_in_threadpool(_answer, offers, request, arm, dry_run)
    return await run_in_threadpool(_answer, offers, request, None, dry_run)


@router.post(
    "/offers/batch",
    response_model=OffersBatchResponse,
    responses=problem_responses(401, 403, 413, 422, 503),
)
def decide_offers_batch(body: OffersBatchRequest, offers: OffersDep, _: RendererRole) -> Response:
    """Decide the offers for 1–500 invoices, each as POST /v1/offers would, answered in order.

    The items are answered as if sent one after another in the order given: a customer's later
    invoice sees the earlier one's decision (the decline cap counts the customer's invoices)."""
    return _answer_batch(offers, body.invoices)


def decision_request(body: OffersRequest, offers: OffersService, today: dt.date) -> DecisionRequest:
    """The request to decide; raises a 422 problem for an invoice date outside the window."""
    day = body.invoice_date or today
    problem = offers.invoice_date_problem(day, today)
    if problem is not None:
        raise invoice_date_out_of_range(problem, "body")
    return DecisionRequest(
        invoice_id=body.invoice_id,
        customer_id=body.customer_id,
        invoice_date=day,
        locale=body.locale,
        max_offers=body.max_offers,
    )


def _refused(error: Exception) -> ProblemError:
    """The problem POST /v1/offers answers for an invoice without a decision."""
    if isinstance(error, UnknownCustomerError):
        detail = f"customer {error.customer_id} is not known"
        return ProblemError(404, detail, kind="unknown-customer")
    if isinstance(error, InvoiceCustomerConflict):
        return ProblemError(409, str(error), kind="invoice-customer-conflict")
    raise error


def _answer(
    offers: OffersService, request: DecisionRequest, arm: Arm | None, dry_run: bool
) -> Response:
    try:
        answer = offers.answer(request, arm, dry_run=dry_run)
    except (UnknownCustomerError, InvoiceCustomerConflict) as error:
        raise _refused(error) from error
    return Response(content=answer, media_type="application/json")


def _response(outcome: InvoiceOutcome) -> Response:
    if isinstance(outcome, InvoiceAnswer):
        return Response(content=outcome.answer_json, media_type="application/json")
    raise _refused(outcome)


def _problem_item(problem: ProblemError) -> str:
    body = problem_json(problem.status, problem.detail, kind=problem.kind, errors=problem.errors)
    return f'{{"status":{problem.status},"problem":{body}}}'


def _item(answer: InvoiceOutcome) -> str:
    if isinstance(answer, InvoiceAnswer):
        # The stored answer's own bytes, as POST /v1/offers replays them.
        return f'{{"status":200,"decision":{answer.answer_json}}}'
    return _problem_item(_refused(answer))


def _answer_batch(offers: OffersService, items: list[Any]) -> Response:
    today = dt.datetime.now(dt.UTC).date()
    results: list[str | None] = [None] * len(items)
    positions: list[int] = []
    requests: list[DecisionRequest] = []
    dry_runs: list[bool] = []
    for position, item in enumerate(items):
        try:
            body = OffersRequest.model_validate(item)
            requests.append(decision_request(body, offers, today))
            dry_runs.append(body.dry_run)
        except ValidationError as error:
            # As POST /v1/offers words it: each error's place in that item's body.
            errors = field_errors(error.errors(), ("body",))
            problem = ProblemError(422, validation_detail(errors), kind="validation", errors=errors)
            results[position] = _problem_item(problem)
            continue
        except ProblemError as problem:
            results[position] = _problem_item(problem)
            continue
        positions.append(position)
    answers = offers.answer_batch(requests, dry_runs)
    for position, answer in zip(positions, answers, strict=True):
        results[position] = _item(answer)
    content = '{"results":[' + ",".join(result or "" for result in results) + "]}"
    return Response(content=content, media_type="application/json")
