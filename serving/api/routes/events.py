"""Offer events: what customers did with the offers on their invoices."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response

from serving.api.deps import DecisionLogDep, MetricsDep, RendererRole
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import EventIn, EventPublic
from serving.decision_log import EventRecord

router = APIRouter(prefix="/v1", tags=["events"])

# The renderer's clock and this server's may differ a little: an event stamped this much before
# its decision was made, or ahead of this server's clock, is taken as it is; more is refused.
EVENT_CLOCK_SKEW = dt.timedelta(minutes=5)


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
        200: {
            "model": EventPublic,
            "description": "This event was stored before under this event_id; the first stands.",
        },
        **problem_responses(401, 403, 409, 413, 422, 503),
    },
)
def record_event(
    event: EventIn,
    log: DecisionLogDep,
    metrics: MetricsDep,
    _: RendererRole,
    response: Response,
) -> EventPublic:
    """Store an impression, click, accept or decline; 202 once durably stored, 200 for a repeat,
    409 for an event_id stored before with another event."""
    stored = log.find_event(event.event_id)
    if stored is not None:
        response.status_code = 200
        return _public(_same_event(stored, event))
    shown = log.shown_in(event.decision_id)
    if shown is None:
        raise _unprocessable(
            "decision_id", f"no decision {event.decision_id} is logged", "unknown-decision"
        )
    decided_at, offers = shown
    if event.offer_id not in offers:
        raise _unprocessable(
            "offer_id",
            f"offer {event.offer_id} was not shown in decision {event.decision_id}",
            "offer-not-in-decision",
        )
    received_at = dt.datetime.now(dt.UTC)
    if event.occurred_at < decided_at - EVENT_CLOCK_SKEW:
        raise _unprocessable(
            "occurred_at",
            f"is before decision {event.decision_id} was made "
            f"({decided_at:%Y-%m-%dT%H:%M:%SZ}): the offer was not shown yet",
            "validation",
        )
    if event.occurred_at > received_at + EVENT_CLOCK_SKEW:
        raise _unprocessable(
            "occurred_at",
            "must not be more than 5 minutes ahead of the server's clock "
            f"({received_at + EVENT_CLOCK_SKEW:%Y-%m-%dT%H:%M:%SZ})",
            "validation",
        )
    record = EventRecord(
        event_id=event.event_id,
        decision_id=event.decision_id,
        offer_id=event.offer_id,
        type=event.type,
        occurred_at=event.occurred_at,
        received_at=received_at,
    )
    stored, created = log.record_event(record)
    if created:
        metrics.events.labels(event.type).inc()
    else:  # the same event_id arrived twice at once; the first one stored wins
        response.status_code = 200
        _same_event(stored, event)
    return _public(stored)


def _same_event(stored: EventRecord, sent: EventIn) -> EventRecord:
    """``stored`` when ``sent`` is the same event again; 409 when the id names another one (another
    decision, offer or type), which would otherwise be lost while its sender was told it was
    stored. A retry stamped again (another ``occurred_at`` only) is the same event: the first
    stamp stands."""
    differ = [
        field
        for field in ("decision_id", "offer_id", "type")
        if getattr(stored, field) != getattr(sent, field)
    ]
    if differ:
        raise ProblemError(
            409,
            f"event {sent.event_id} is stored with another {', '.join(differ)}; "
            "a new event needs an event_id of its own",
            kind="event-conflict",
        )
    return stored
