"""Offer events: what customers did with the offers on their invoices."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response

from serving.api.deps import DecisionLogDep, MetricsDep, RendererRole
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import EventIn, EventPublic
from serving.decision_log import EventRecord

router = APIRouter(prefix="/v1", tags=["events"])


def _public(event: EventRecord) -> EventPublic:
    return EventPublic(
        event_id=event.event_id,
        decision_id=event.decision_id,
        offer_id=event.offer_id,
        type=event.type,  # type: ignore[arg-type]
        occurred_at=event.occurred_at,
        received_at=event.received_at,
    )


def _unprocessable(field: str, detail: str, kind: str) -> ProblemError:
    return ProblemError(
        422,
        detail,
        kind=kind,
        errors=[{"loc": ["body", field], "msg": detail, "type": kind.replace("-", "_")}],
    )


@router.post(
    "/events",
    status_code=202,
    response_model=EventPublic,
    responses={
        200: {"model": EventPublic, "description": "This event_id was stored before; unchanged."},
        **problem_responses(401, 403, 413, 422, 503),
    },
)
def record_event(
    event: EventIn,
    log: DecisionLogDep,
    metrics: MetricsDep,
    _: RendererRole,
    response: Response,
) -> EventPublic:
    """Store an impression, click, accept or decline; 202 once durably stored, 200 for a repeat."""
    stored = log.find_event(event.event_id)
    if stored is not None:
        response.status_code = 200
        return _public(stored)
    offers = log.offers_of(event.decision_id)
    if offers is None:
        raise _unprocessable(
            "decision_id", f"no decision {event.decision_id} is logged", "unknown-decision"
        )
    if event.offer_id not in offers:
        raise _unprocessable(
            "offer_id",
            f"offer {event.offer_id} was not shown in decision {event.decision_id}",
            "offer-not-in-decision",
        )
    record = EventRecord(
        event_id=event.event_id,
        decision_id=event.decision_id,
        offer_id=event.offer_id,
        type=event.type,
        occurred_at=event.occurred_at,
        received_at=dt.datetime.now(dt.UTC),
    )
    stored, created = log.record_event(record)
    if created:
        metrics.events.labels(event.type).inc()
    else:  # the same event_id arrived twice at once; the first one stored wins
        response.status_code = 200
    return _public(stored)
