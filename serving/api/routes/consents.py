"""Consent answers: stored durably, then applied to the online store at once (role consent or
renderer)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response

from features.consent_changes import ConsentAnswer, answer_change_id
from serving.api.deps import ConsentRole, ConsentsDep
from serving.api.errors import ProblemError, problem_responses
from serving.api.schemas import ConsentIn, ConsentPublic
from serving.consents import ConsentChangeConflict, ConsentResult
from serving.feature_reader import FeatureStoreUnavailable

router = APIRouter(prefix="/v1", tags=["consents"])


def _stored_not_applied(change_id: str, derived: bool) -> str:
    """The 503's detail: the change is stored, under which id, and how it gets applied."""
    again = (
        f"the same answer with its updated_at is sent again (stored as change {change_id})"
        if derived
        else f"change_id {change_id} is sent again"
    )
    return (
        "the feature store is unavailable; the consent change is stored and will be applied when "
        f"{again} or by `offers consents sync`"
    )


def _public(result: ConsentResult) -> ConsentPublic:
    change = result.change
    return ConsentPublic(
        change_id=change.change_id,
        customer_id=change.customer_id,
        purpose=change.purpose,  # type: ignore[arg-type]
        granted=change.granted,
        updated_at=change.updated_at,
        received_at=change.received_at,
        online=result.online,
    )


@router.post(
    "/consents",
    status_code=202,
    response_model=ConsentPublic,
    responses={
        200: {
            "model": ConsentPublic,
            "description": "This change_id was stored before with the same answer; unchanged.",
        },
        **problem_responses(401, 403, 409, 413, 422, 503),
    },
)
def record_consent(
    body: ConsentIn, consents: ConsentsDep, _: ConsentRole, response: Response
) -> ConsentPublic:
    """Store a consent answer, then apply it to the online store: the next decision for the
    customer reads it. 202 once stored, 200 for a change_id stored before with the same answer
    (without a change_id: the same answer at the same updated_at)."""
    updated_at = body.updated_at
    if updated_at is None and body.change_id is not None:
        # Sent again without its updated_at: the moment stored with it the first time, so the
        # same answer is the same change (200), not another one (409).
        updated_at = consents.stored_updated_at(body.change_id)
    answer = ConsentAnswer(
        customer_id=body.customer_id,
        purpose=body.purpose,
        granted=body.granted,
        updated_at=updated_at or dt.datetime.now(dt.UTC),
    )
    change_id = body.change_id or answer_change_id(answer, source="answer")
    try:
        result = consents.record(change_id, answer)
    except ConsentChangeConflict as error:
        raise ProblemError(409, str(error), kind="consent-change-conflict") from error
    except FeatureStoreUnavailable as error:
        raise ProblemError(
            503,
            _stored_not_applied(change_id, derived=body.change_id is None),
            kind="feature-store-unavailable",
            headers={"Retry-After": "1"},
        ) from error
    if not result.created:
        response.status_code = 200
    return _public(result)
