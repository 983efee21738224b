"""Offers: one decision per invoice, logged durably before it is answered (role renderer)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from serving.api.deps import OffersDep, RendererRole
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import OffersRequest
from serving.decision.inputs import DecisionRequest, UnknownCustomerError
from serving.offers import Arm, InvoiceCustomerConflict, OffersService
from serving.offers_response import OffersResponse

router = APIRouter(prefix="/v1", tags=["offers"])


@router.post(
    "/offers",
    response_model=OffersResponse,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
)
async def decide_offers(body: OffersRequest, offers: OffersDep, _: RendererRole) -> Response:
    """Decide the offers for one invoice; the same invoice_id always gets the same decision.

    With `"dry_run": true` the decision is answered but logged, counted and stored nowhere."""
    today = dt.datetime.now(dt.UTC).date()
    day = body.invoice_date or today
    problem = offers.invoice_date_problem(day, today)
    if problem is not None:
        raise ProblemError(
            422,
            problem,
            kind="invoice-date-out-of-range",
            errors=[
                {
                    "loc": ["body", "invoice_date"],
                    "msg": problem,
                    "type": "invoice_date_out_of_range",
                }
            ],
        )
    request = DecisionRequest(
        invoice_id=body.invoice_id,
        customer_id=body.customer_id,
        invoice_date=day,
        locale=body.locale,
        max_offers=body.max_offers,
    )
    # On the event loop only when nothing on the path can wait: choosing the arm may read the
    # experiments from the log, and a slow database, store or registry must never stall the loop.
    dry_run = body.dry_run
    if offers.log_is_local:
        arm = offers.arm(request.customer_id, request.invoice_date)
        if offers.answers_without_waiting(arm):
            return _answer(offers, request, arm, dry_run)
        return await run_in_threadpool(_answer, offers, request, arm, dry_run)
    return await run_in_threadpool(_answer, offers, request, None, dry_run)


def _answer(
    offers: OffersService, request: DecisionRequest, arm: Arm | None, dry_run: bool
) -> Response:
    try:
        answer = offers.answer(request, arm, dry_run=dry_run)
    except UnknownCustomerError as error:
        raise ProblemError(
            404, f"customer {request.customer_id} is not known", kind="unknown-customer"
        ) from error
    except InvoiceCustomerConflict as error:
        raise ProblemError(409, str(error), kind="invoice-customer-conflict") from error
    return Response(content=answer, media_type="application/json")
