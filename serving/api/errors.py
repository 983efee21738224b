"""Every error as RFC 9457 problem+json: ``type``, ``title``, ``status``, ``detail``, ``errors``.

Handlers never put a stack trace, an exception message from a library or the request body into a
response; the detail is written here, for the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.log_lines import frames_of

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:invoice-offers:problem:"

logger = logging.getLogger("serving.api")


class Problem(BaseModel):
    """An RFC 9457 problem."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, for the caller.")


class FieldError(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field.")
    msg: str
    type: str


class ValidationProblem(Problem):
    """A request that does not match the schema; ``errors`` lists each invalid part."""

    errors: list[FieldError]


class ProblemError(Exception):
    """Raise to answer with a problem; ``kind`` becomes the problem ``type``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = headers
        self.errors = errors


# RFC 9110's names; Python's HTTPStatus has the older ones before 3.13.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def problem_title(status: int) -> str:
    return _TITLES.get(status) or HTTPStatus(status).phrase


def problem_type(kind: str | None) -> str:
    return f"{PROBLEM_TYPE_BASE}{kind}" if kind else "about:blank"


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response, built without FastAPI's encoder (it is on hot error paths too)."""
    return Response(
        content=problem_json(status, detail, kind=kind, errors=errors),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def problem_json(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> str:
    """A problem's JSON: the body of a problem response, or one item of a batch's results."""
    problem: Problem
    title = problem_title(status)
    if errors is None:
        problem = Problem(type=problem_type(kind), title=title, status=status, detail=detail)
    else:
        problem = ValidationProblem(
            type=problem_type(kind),
            title=title,
            status=status,
            detail=detail,
            errors=[FieldError.model_validate(error) for error in errors],
        )
    return problem.model_dump_json()


def _field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    return field_errors(error.errors())


def field_errors(items: Sequence[Any], prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """Pydantic's errors as a problem's ``errors``, each ``loc`` after ``prefix``."""
    # Only where, what and which rule: pydantic's `input` and `ctx` would echo the request back.
    return [
        {
            "loc": [*prefix, *_location(item)],
            "msg": _public_message(item),
            "type": item.get("type", ""),
        }
        for item in items
    ]


def _location(item: Any) -> Sequence[str | int]:
    """Where the error is; for a body that is not JSON, the body (FastAPI adds the character the
    parser stopped at, which the message says instead)."""
    where = tuple(item.get("loc", ()))
    return where[:1] if item.get("type") == "json_invalid" else where


def _public_message(item: Any) -> str:
    # Pydantic names its own types where a JSON object was expected ("a valid dictionary or
    # instance of OffersRequest", "… or object to extract fields from"); the caller sent JSON, so
    # say it in JSON's words, on every route and for a batch's item alike.
    if item.get("type") in _OBJECT_EXPECTED:
        return "Input should be a JSON object"
    if item.get("type") == "json_invalid":
        # FastAPI says "JSON decode error" with the parser's position (counted from 0) in ``loc``
        # and its complaint (never the input) in ``ctx``; a reader counts characters from 1.
        where = tuple(item.get("loc", ()))
        at = f" at character {where[1] + 1}" if len(where) > 1 and isinstance(where[1], int) else ""
        reason = (item.get("ctx") or {}).get("error")
        return f"the body is not valid JSON{at}" + (f": {reason}" if reason else "")
    if item.get("type") == "int_parsing_size":
        # Pydantic's words ("Unable to parse input string as an integer") speak of a string
        # where the caller sent a number such as 1e308.
        return "Input should be a whole number; this one is too large for the field"
    return str(item.get("msg", ""))


def invoice_date_out_of_range(problem: str, where: str) -> ProblemError:
    """422 ``invoice-date-out-of-range`` for an ``invoice_date`` in the body or the query
    (``where``), with the window in ``problem``."""
    return ProblemError(
        422,
        problem,
        kind="invoice-date-out-of-range",
        errors=[
            {"loc": [where, "invoice_date"], "msg": problem, "type": "invoice_date_out_of_range"}
        ],
    )


def validation_detail(errors: list[dict[str, Any]]) -> str:
    """The ``detail`` of a validation problem: up to five of its errors, where and what."""
    return _validation_detail(errors)


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    named = []
    for item in errors[:5]:
        where = ".".join(str(part) for part in item["loc"][1:]) or str(
            item["loc"][0] if item["loc"] else "request"
        )
        named.append(f"{where}: {item['msg']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(named) + more if named else "the request is not valid"


async def _on_problem(_: Request, error: Exception) -> Response:
    assert isinstance(error, ProblemError)
    return problem_response(
        error.status, error.detail, kind=error.kind, errors=error.errors, headers=error.headers
    )


_OBJECT_EXPECTED = ("model_type", "model_attributes_type", "dict_type")


def _not_sent_as_json(request: Request) -> str | None:
    """The media type a body came with, when it is not JSON (FastAPI then reads no JSON, and
    pydantic sees text where an object belongs); None for JSON or no content type."""
    given = request.headers.get("content-type")
    if not given:
        return None
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return None
    return media[:64] or "an empty content type"


async def _on_validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = _field_errors(error)
    media = _not_sent_as_json(request)
    if media is not None:
        for item in errors:
            if item["loc"] == ["body"] and item["type"] in _OBJECT_EXPECTED:
                # The body may be a perfect JSON object: what is wrong is how it was labelled.
                item["msg"] = (
                    f"the body must be sent as JSON (Content-Type: application/json), not {media}"
                )
    return problem_response(422, _validation_detail(errors), kind="validation", errors=errors)


# Starlette's fixed phrases, said for a caller. HTTPExceptions come only from the framework and the
# body limit (routes raise ProblemError), so their details are fixed texts, never internal data.
_FRAMEWORK_DETAILS = {
    "Not Found": "no such resource",
    "Method Not Allowed": "method not allowed on this resource",
}


# FastAPI answers a body that is not UTF-8 with 400 but malformed JSON with 422; both are one
# problem for the caller, a body that is not JSON, so both are 422 with the same error.
_UNPARSABLE_BODY = "There was an error parsing the body"
_NOT_JSON = {"loc": ["body"], "msg": "the body is not valid JSON", "type": "json_invalid"}


async def _on_http(_: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and error.detail == _UNPARSABLE_BODY:
        return problem_response(
            422, "body: the body is not valid JSON", kind="validation", errors=[_NOT_JSON]
        )
    detail = error.detail if isinstance(error.detail, str) and error.detail else ""
    detail = _FRAMEWORK_DETAILS.get(detail, detail) or problem_title(error.status_code)
    return problem_response(error.status_code, detail, headers=dict(error.headers or {}))


def route_of(request: Request) -> str:
    """The route's template (``/v1/customers/{customer_id}/usage-summary``), never the path
    itself: paths carry customer ids."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


async def _on_unexpected(request: Request, error: Exception) -> Response:
    logger.error(
        "unhandled error",
        extra={
            "route": route_of(request),
            "error": type(error).__name__,
            "frames": frames_of(error),
        },
    )
    return problem_response(500, "the server could not answer this request", kind="internal")


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, the framework's included, as problem+json."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


_RESPONSE_TEXT = {
    401: "No API key, or a key that is not known.",
    403: "The key's role may not call this route.",
    404: "Not found.",
    409: "Conflicts with what is stored.",
    413: "The request body is larger than the limit.",
    422: "The request is not valid (an unknown body field or query parameter included); "
    "`errors` names each invalid part.",
    503: "A dependency this answer needs is unavailable; `Retry-After` says when to ask again.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problems a route can answer (served as problem+json)."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else Problem,
            "description": _RESPONSE_TEXT.get(status, HTTPStatus(status).phrase),
        }
        for status in statuses
    }
