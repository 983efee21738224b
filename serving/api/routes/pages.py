"""Pages for people: signing in from a browser, and the invoice as the customer will see it.

A browser cannot send a Bearer key, so ``POST /sign-in`` trades a key for a session cookie:
HttpOnly, SameSite=Strict, Secure over HTTPS, holding a signed, expiring token that names the key
only by an HMAC (``serving.auth.SessionTokens``). Only pages take that cookie; the JSON routes keep
to Bearer keys. The preview decides through the same ``OffersService`` as ``POST /v1/offers``.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import cache
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from serving.api.deps import (
    SESSION_COOKIE,
    SIGN_IN_REDIRECT,
    KnownPageQueryOnly,
    KnownPreviewQueryOnly,
    OffersDep,
    PreviewPage,
    ServicesDep,
    SignInNeeded,
)
from serving.api.errors import (
    Problem,
    ProblemError,
    ValidationProblem,
    invoice_date_out_of_range,
    problem_responses,
)
from serving.api.schemas import OffersRequest
from serving.decision.inputs import DecisionRequest, Locale, UnknownCustomerError
from serving.decision.reasons import format_amount, format_sek
from serving.fields import ID_PATTERN, INVOICE_DATE_DESCRIPTION, IsoDate
from serving.offers import InvoiceCustomerConflict
from serving.offers_response import OffersResponse

router = APIRouter(tags=["pages"])

SIGN_IN = "/sign-in"
TEMPLATES = FilePath(__file__).resolve().parents[2] / "templates"
# Pages show a customer's invoice or a signed-in state: no cache may keep them. The policy lets
# the browser load nothing but this site's own icon and the page's inline style, post forms only
# here, and show the page in no other site's frame.
NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
DEFAULT_MAX_OFFERS: int = OffersRequest.model_fields["max_offers"].default
NEXT_MAX_LENGTH = 512

HTML = {"text/html": {"schema": {"type": "string"}}}
PAGE_HTML: dict[int | str, dict[str, Any]] = {200: {"content": HTML, "description": "The page."}}


@cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=TEMPLATES)


def _page(
    request: Request,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    return _templates().TemplateResponse(
        request,
        template,
        context,
        status_code=status_code,
        headers={**PAGE_HEADERS, **(headers or {})},
    )


# The icon a browser asks every site for; served here, so no page load ends in a 404.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#1d4f91"/>'
    b'<path d="M4 4h8v1.5H4zm0 3h8v1.5H4zm0 3h5v1.5H4z" fill="#fff"/></svg>'
)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(
        FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


# Signing in -------------------------------------------------------------------------------------


def same_site_path(value: str | None) -> str:
    """Where to go after signing in: a path on this site, or else the sign-in page itself.

    Anything a browser could read as another site is refused: a scheme or host, ``//host``,
    backslashes (``/\\host``, which browsers treat as ``//host``) and control characters."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return SIGN_IN
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        return SIGN_IN
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return SIGN_IN
    return value


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site (a browser names the page's origin in ``Origin``):
    no other site may sign a browser in with a key of its choosing, or out."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    ours = f"{request.url.scheme}://{request.url.netloc}"
    if origin != ours:
        raise ProblemError(403, "the form was posted from another site", kind="cross-site-form")


def _sign_in_page(
    request: Request,
    *,
    next_path: str,
    error: str | None = None,
    role: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    return _page(
        request,
        "sign_in.html",
        {"next_path": next_path, "error": error, "role": role},
        status_code=status_code,
        headers=headers,
    )


def _client_address(request: Request) -> str:
    """The address failed sign-ins are counted against (uvicorn reads it from
    ``X-Forwarded-For`` only when the proxy is one of its ``--forwarded-allow-ips``)."""
    return request.client.host if request.client is not None else "unknown"


def _wait_words(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


# Each page refuses a query parameter it does not take (422), as the JSON routes do; the preview
# only after its sign-in, so that a browser without a session is sent to sign in first.
@router.get(
    SIGN_IN,
    response_class=HTMLResponse,
    responses={**PAGE_HTML, **problem_responses(422)},
    dependencies=[KnownPageQueryOnly],
)
def sign_in_form(
    request: Request,
    services: ServicesDep,
    next: Annotated[str | None, Query(max_length=NEXT_MAX_LENGTH)] = None,
) -> HTMLResponse:
    """The sign-in form; `next` is the page to open afterwards (a path on this site)."""
    token = request.cookies.get(SESSION_COOKIE)
    role = services.sessions.role_of(token) if token else None
    return _sign_in_page(request, next_path=same_site_path(next), role=role)


@router.post(
    SIGN_IN,
    response_class=RedirectResponse,
    status_code=303,
    dependencies=[KnownPageQueryOnly],
    responses={
        303: {"description": "Signed in: the session cookie is set; on to `next`."},
        401: {"content": HTML, "description": "The key is not known: the form again."},
        429: {
            "content": HTML,
            "description": "Too many unknown keys from this address within the window "
            "(OFFERS_SIGN_IN_MAX_FAILURES in OFFERS_SIGN_IN_WINDOW_SECONDS): the form again, "
            "whatever the key, with `Retry-After` in seconds.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds until a sign-in from this address is taken again.",
                    "schema": {"type": "integer"},
                }
            },
        },
        403: {"model": Problem, "description": "The form was posted from another site."},
        422: {
            "model": ValidationProblem,
            "content": HTML,
            "description": "No key entered: the form again (HTML); a malformed form: a problem.",
        },
        **problem_responses(413),
    },
)
def sign_in(
    request: Request,
    services: ServicesDep,
    key: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=NEXT_MAX_LENGTH)] = "",
) -> Response:
    """Trade an API key for a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) that
    the pages accept; the JSON routes do not. The cookie holds a signed token, never the key.
    After `OFFERS_SIGN_IN_MAX_FAILURES` unknown keys (5) from one address within
    `OFFERS_SIGN_IN_WINDOW_SECONDS` (300), every sign-in from it is 429 until the oldest leaves
    the window."""
    _same_origin(request)
    next_path = same_site_path(next)
    address = _client_address(request)
    wait = services.sign_ins.retry_after(address)
    if wait is not None:  # refused before the key is looked at: it says nothing about the key
        return _sign_in_page(
            request,
            next_path=next_path,
            error=f"Too many failed sign-ins from your address. Try again in {_wait_words(wait)}.",
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    if not key.strip():
        return _sign_in_page(
            request, next_path=next_path, error="Enter your API key.", status_code=422
        )
    role = services.keys.role_of(key.strip())
    if role is None:
        services.sign_ins.failed(address)
        return _sign_in_page(
            request, next_path=next_path, error="That key is not known.", status_code=401
        )
    response = RedirectResponse(next_path, status_code=303, headers=NO_STORE)
    response.set_cookie(
        SESSION_COOKIE,
        services.sessions.issue(key.strip()),
        max_age=services.sessions.max_age_seconds,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(
    "/sign-out",
    response_class=RedirectResponse,
    status_code=303,
    dependencies=[KnownPageQueryOnly],
    responses={
        303: {"description": "The session cookie is removed; on to the sign-in form."},
        403: {"model": Problem, "description": "The form was posted from another site."},
        **problem_responses(422),
    },
)
def sign_out(request: Request) -> Response:
    """End the browser's session."""
    _same_origin(request)
    response = RedirectResponse(SIGN_IN, status_code=303, headers=NO_STORE)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def sign_in_needed(request: Request, error: Exception) -> Response:
    """A browser without a session goes to the sign-in form and comes back; one signed in with a
    key of another role sees the form with what the page needs (403)."""
    assert isinstance(error, SignInNeeded)
    if error.forbidden is not None:
        return _sign_in_page(
            request, next_path=error.next_path, error=error.forbidden, status_code=403
        )
    next_path = error.next_path
    if len(next_path) > NEXT_MAX_LENGTH:  # a query the form could not carry back: the page alone
        next_path = urlsplit(next_path).path[:NEXT_MAX_LENGTH]
    target = f"{SIGN_IN}?next={quote(next_path, safe='')}"
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


# The invoice preview ----------------------------------------------------------------------------

# What the invoice calls things, in the customer's language.
LABELS: dict[str, dict[str, str]] = {
    "sv": {
        "invoice": "Faktura",
        "period": "Period",
        "plan": "Ditt abonnemang",
        "binding_end": "Bindningstid till",
        "usage": "Din användning",
        "period_plan": "Perioden debiterades enligt",
        "measure": "Tjänst",
        "used": "Använt",
        "included": "Ingår",
        "unlimited": "Obegränsat",
        "data": "Data",
        "voice": "Samtal",
        "sms": "SMS",
        "roaming": "Roaming",
        "extra_charges": "Tillkommande avgifter",
        "no_extra_charges": "Inga tillkommande avgifter den här perioden.",
        "total": "Summa tillkommande avgifter",
        "offers": "Erbjudanden till dig",
        "no_offers": "Inga erbjudanden på den här fakturan.",
        "per_month": "/mån",
        "saving": "Du sparar",
        "costs_more": "mer än du betalar nu",
        "unknown": "uppgift saknas",
    },
    "en": {
        "invoice": "Invoice",
        "period": "Period",
        "plan": "Your plan",
        "binding_end": "Binding period until",
        "usage": "Your usage",
        "period_plan": "The period was billed on",
        "measure": "Service",
        "used": "Used",
        "included": "Included",
        "unlimited": "Unlimited",
        "data": "Data",
        "voice": "Calls",
        "sms": "SMS",
        "roaming": "Roaming",
        "extra_charges": "Extra charges",
        "no_extra_charges": "No extra charges this period.",
        "total": "Extra charges in total",
        "offers": "Offers for you",
        "no_offers": "No offers on this invoice.",
        "per_month": "/month",
        "saving": "You save",
        "costs_more": "more than you pay now",
        "unknown": "not known",
    },
}


def _error_page(
    request: Request, status_code: int, title: str, detail: str, hint: str | None = None
) -> HTMLResponse:
    return _page(
        request,
        "page_error.html",
        {"status": status_code, "title": title, "detail": detail, "hint": hint},
        status_code=status_code,
    )


InvoiceId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.get(
    "/preview/invoices/{invoice_id}",
    response_class=HTMLResponse,
    dependencies=[KnownPreviewQueryOnly],
    responses={
        **PAGE_HTML,
        **SIGN_IN_REDIRECT,
        404: {
            "content": HTML,
            "description": "No stored decision and no customer_id, or an unknown customer.",
        },
        409: {"content": HTML, "description": "The invoice was decided for another customer."},
        **problem_responses(401, 403, 422, 503),
    },
)
def invoice_preview(
    invoice_id: InvoiceId,
    request: Request,
    offers: OffersDep,
    _: PreviewPage,
    locale: Annotated[Locale, Query(description="The language of the page and of a dry run.")] = (
        "sv"
    ),
    customer_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=ID_PATTERN,
            description="Needed when the invoice has no stored decision: who to decide for.",
        ),
    ] = None,
    invoice_date: Annotated[IsoDate | None, Query(description=INVOICE_DATE_DESCRIPTION)] = None,
) -> HTMLResponse:
    """The invoice as the customer will see it: usage summary, extra charges explained, offers
    with their reasons. The invoice's stored decision when it has one (replayed); otherwise a dry
    run for `customer_id` on `invoice_date`, which stores nothing. The page says which."""
    today = dt.datetime.now(dt.UTC).date()
    request_to_decide = None
    if customer_id is not None:
        day = invoice_date or today
        problem = offers.invoice_date_problem(day, today)
        if problem is not None:  # refused as POST /v1/offers refuses it
            raise invoice_date_out_of_range(problem, "query")
        request_to_decide = DecisionRequest(
            invoice_id=invoice_id,
            customer_id=customer_id,
            invoice_date=day,
            locale=locale,
            max_offers=DEFAULT_MAX_OFFERS,
        )
    try:
        preview = offers.preview(invoice_id, request_to_decide)
    except UnknownCustomerError:
        return _error_page(
            request,
            404,
            "Unknown customer",
            f"Customer {customer_id} is not known to the feature store.",
        )
    except InvoiceCustomerConflict as error:
        return _error_page(request, 409, "Another customer's invoice", str(error))
    if preview is None:
        return _error_page(
            request,
            404,
            "No decision for this invoice",
            f"Invoice {invoice_id} has no stored decision.",
            hint="Add ?customer_id=… (and &invoice_date=YYYY-MM-DD) to the address to see a dry "
            "run: the offers decided as POST /v1/offers would decide them, stored nowhere.",
        )
    answer = OffersResponse.model_validate_json(preview.answer_json)
    return _page(request, "preview.html", preview_context(answer, preview.stored, locale))


def preview_context(answer: OffersResponse, stored: bool, locale: Locale) -> dict[str, Any]:
    """What ``preview.html`` shows of an answer."""
    labels = LABELS[locale]
    return {
        "answer": answer,
        "stored": stored,
        "locale": locale,
        "labels": labels,
        # The engine's own formats, so the page reads like the reasons it shows.
        "money": lambda value: format_sek(value, locale, whole=False),
        "quantity": lambda value: (
            labels["unknown"] if value is None else format_amount(value, locale)
        ),
    }
