"""Request and response bodies of the HTTP API (docs/http-api.md), in families per resource."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.columns import CUSTOMER_KEY
from serving.api.errors import Problem, ValidationProblem
from serving.decision.consent import MODEL_PREFIX, REQUESTABLE
from serving.decision.inputs import Locale
from serving.offers_response import OffersResponse

ID_PATTERN = r"^[A-Za-z0-9._-]+$"
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN, strict=True)
]
EventType = Literal["impression", "click", "accept", "decline"]
# The policies an experiment may ask for: the engine's own names, or a registered ranker version.
VARIANT_POLICY_PATTERN = rf"^({'|'.join(REQUESTABLE)}|{MODEL_PREFIX}[A-Za-z0-9._/-]{{1,64}})$"
WEIGHT_TOLERANCE = 1e-9


# Timestamps the API accepts, in UTC. Python's datetime ends at years 1 and 9999, so a zone offset
# on 0001-01-01 or 9999-12-31 overflows in the conversion; and arithmetic on a stored time (an
# experiment's follow-up window, a retention period) needs room on both sides.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2999


def _as_utc(value: dt.datetime) -> dt.datetime:
    # Timestamps are UTC (docs/http-api.md, basics); one without a zone is read as UTC.
    try:
        utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_YEAR <= utc.year <= LATEST_YEAR:
        raise ValueError(f"must lie between the years {EARLIEST_YEAR} and {LATEST_YEAR} in UTC")
    return utc


_ISO_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    # Lax parsing takes a number (JSON 0, or "0" in a query string) as seconds since 1970; a date
    # or time must be written out: an ISO 8601 string starting YYYY-MM-DD. Values already parsed
    # (a stored experiment read back) pass through.
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _ISO_DATE_START.match(value):
        raise ValueError("must be an ISO 8601 date or date-time string (YYYY-MM-DD…)")
    return value


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(value: str) -> str:
    # NUL cannot be stored in PostgreSQL text, and no other control character belongs in a
    # description; tabs and line breaks may.
    found = _CONTROL_CHARACTERS.search(value)
    if found:
        raise ValueError(
            f"must not contain control characters (found U+{ord(found.group()):04X} at "
            f"position {found.start()})"
        )
    return value


FreeText = Annotated[str, AfterValidator(_printable)]
IsoDate = Annotated[dt.date, BeforeValidator(_iso_text)]
INVOICE_DATE_DESCRIPTION = (
    "The invoice's date (YYYY-MM-DD); today (UTC) when left out. Its billing period is the last "
    "calendar month that ended before it: the usage summary and plan fit describe that month and "
    "the months before it, never a month not yet ended on the invoice's date."
)
UtcDatetime = Annotated[dt.datetime, BeforeValidator(_iso_text), AfterValidator(_as_utc)]
# A moment that must say its zone: a consent answer read in the wrong zone could move it before or
# after another answer for the same purpose.
ZonedDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_as_utc)]


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer: 3 and 3.0, not "3" or true (lax mode would take those too).
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


# Offers -----------------------------------------------------------------------------------------


class OffersRequest(BaseModel):
    """One invoice to decide offers for."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "invoice_id": "INV-2026-11-0001234",
                    CUSTOMER_KEY: "C0001234",
                    "invoice_date": "2026-11-30",
                    "locale": "sv",
                    "max_offers": 3,
                }
            ]
        },
    )

    invoice_id: Identifier
    customer_id: Identifier
    invoice_date: IsoDate | None = Field(
        default=None,
        description=INVOICE_DATE_DESCRIPTION,
    )
    locale: Locale = "sv"
    max_offers: JsonInt = Field(default=3, ge=0, le=10)
    dry_run: StrictBool = Field(
        default=False,
        description="Decide and answer as usual, but log, count and store nothing; the answer "
        'says "dry_run": true and no event can refer to it. An invoice that already has a '
        "decision is answered with that decision, unchanged.",
    )


MAX_BATCH_INVOICES = 500


class OffersBatchRequest(BaseModel):
    """Many invoices in one call: each item a POST /v1/offers body, checked on its own."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "invoices": [
                        {
                            "invoice_id": "INV-2026-11-0001234",
                            CUSTOMER_KEY: "C0001234",
                            "invoice_date": "2026-11-30",
                        },
                        {
                            "invoice_id": "INV-2026-11-0001235",
                            CUSTOMER_KEY: "C0001235",
                            "invoice_date": "2026-11-30",
                            "locale": "en",
                            "max_offers": 2,
                        },
                    ]
                }
            ]
        },
    )

    # The items are documented as any JSON value, which they are: one that is not a valid
    # OffersRequest is answered, not refused.
    invoices: list[Any] = Field(
        min_length=1,
        max_length=MAX_BATCH_INVOICES,
        description=f"1–{MAX_BATCH_INVOICES} POST /v1/offers bodies (OffersRequest), answered in "
        "this order; an item that is not a valid one is answered with its own 422 problem.",
    )


class OffersBatchResult(BaseModel):
    """One invoice's answer: its decision, or the problem POST /v1/offers would have answered."""

    status: Literal[200, 404, 409, 422] = Field(
        description="What POST /v1/offers would have answered for this item."
    )
    decision: OffersResponse | None = Field(
        default=None, description="With status 200: the decision, as POST /v1/offers answers it."
    )
    problem: ValidationProblem | Problem | None = Field(
        default=None,
        description="Otherwise: the problem, as POST /v1/offers answers it (404 unknown-customer, "
        "409 invoice-customer-conflict, 422 validation or invoice-date-out-of-range).",
    )


class OffersBatchResponse(BaseModel):
    """Each invoice's answer, in the order asked."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "status": 200,
                            "decision": {
                                "decision_id": "1c7a83c7-045a-4c26-80dd-d1ad9c951492",
                                "invoice_id": "INV-2026-11-0001234",
                                CUSTOMER_KEY: "C0001234",
                                "policy": "model",
                                "model_version": "offer-ranker/3",
                                "experiment": None,
                                "consent": {
                                    "marketing": True,
                                    "profiling": True,
                                    "usage_insights": False,
                                },
                                "offers": [],
                                "usage_summary": None,
                                "degraded": None,
                            },
                        },
                        {
                            "status": 404,
                            "problem": {
                                "type": "urn:invoice-offers:problem:unknown-customer",
                                "title": "Not Found",
                                "status": 404,
                                "detail": "customer C0001235 is not known",
                            },
                        },
                    ]
                }
            ]
        }
    )

    results: list[OffersBatchResult]


# Events -----------------------------------------------------------------------------------------


class EventIn(BaseModel):
    """Something the customer did with an offer on an invoice."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "EV-000001",
                    "decision_id": "0b6f2c1e-5a3b-4c1d-9e8f-7a6b5c4d3e2f",
                    "offer_id": "PLAN_30GB",
                    "type": "accept",
                    "occurred_at": "2026-12-02T09:30:00Z",
                }
            ]
        },
    )

    event_id: Identifier
    decision_id: Identifier
    offer_id: Identifier
    type: EventType
    occurred_at: UtcDatetime


class EventPublic(BaseModel):
    event_id: str
    decision_id: str
    offer_id: str
    type: EventType
    occurred_at: dt.datetime
    received_at: dt.datetime


# Consents ---------------------------------------------------------------------------------------

ConsentPurpose = Literal["marketing", "profiling", "usage_insights"]
OnlineOutcome = Literal["applied", "superseded", "unknown-customer", "deferred"]
# A consent answer may be stamped a little ahead of this server's clock (clocks drift), no more.
CONSENT_CLOCK_SKEW = dt.timedelta(minutes=5)


class ConsentIn(BaseModel):
    """One consent answer: a purpose granted or withdrawn by the customer at ``updated_at``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "change_id": "CC-000001",
                    CUSTOMER_KEY: "C0001234",
                    "purpose": "marketing",
                    "granted": False,
                    "updated_at": "2026-12-02T09:30:00Z",
                }
            ]
        },
    )

    change_id: Identifier
    customer_id: Identifier
    purpose: ConsentPurpose
    granted: bool = Field(strict=True)
    updated_at: ZonedDatetime = Field(
        description="When the customer answered, with its zone; at most 5 minutes ahead of now."
    )

    @field_validator("updated_at")
    @classmethod
    def _not_ahead(cls, value: dt.datetime) -> dt.datetime:
        latest = dt.datetime.now(dt.UTC) + CONSENT_CLOCK_SKEW
        if value > latest:
            raise ValueError(
                "must not be more than 5 minutes ahead of the server's clock "
                f"({latest:%Y-%m-%dT%H:%M:%SZ})"
            )
        return value


class ConsentPublic(BaseModel):
    change_id: str
    customer_id: str
    purpose: ConsentPurpose
    granted: bool
    updated_at: dt.datetime
    received_at: dt.datetime
    online: OnlineOutcome = Field(
        description="applied: the online store holds the answer now. superseded: a newer answer "
        "for this customer and purpose is stored; nothing changed online. unknown-customer: the "
        "online store has no consent row for the customer; the answer is stored and applied by "
        "`offers consents sync` once the customer's row is materialized. deferred: a grant older "
        "than the customer's online row; the answer is stored and applied by the next sync, "
        "which can tell whether the consents table holds a newer answer."
    )


# Experiments ------------------------------------------------------------------------------------


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Identifier
    weight: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    policy: str = Field(
        pattern=VARIANT_POLICY_PATTERN,
        description="model, rules, non_personalised, holdout, or model:<version> (a challenger).",
    )


class ExperimentCreate(BaseModel):
    """An offer experiment: customers are split over the variants by weight while it runs."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "ranker-vs-rules",
                    "description": "Does the ranker beat the rules?",
                    "variants": [
                        {"name": "treatment", "weight": 0.45, "policy": "model"},
                        {"name": "rules", "weight": 0.45, "policy": "rules"},
                        {"name": "control", "weight": 0.10, "policy": "holdout"},
                    ],
                    "start": "2026-12-01T00:00:00Z",
                    "end": "2027-02-28T23:59:59Z",
                }
            ]
        },
    )

    key: Identifier
    description: FreeText = Field(default="", max_length=2000)
    variants: list[VariantSpec] = Field(min_length=1, max_length=20)
    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentCreate:
        names = [variant.name for variant in self.variants]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(repeated)}")
        total = math.fsum(variant.weight for variant in self.variants)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"variant weights must sum to 1, they sum to {total:.12g}")
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class ExperimentPublic(ExperimentCreate):
    model_config = ConfigDict(extra="ignore")

    created_at: dt.datetime


class ExperimentsPublic(BaseModel):
    data: list[ExperimentPublic]
    count: int


class Interval(BaseModel):
    low: float
    high: float


class Difference(BaseModel):
    against: str = Field(description="The control variant.")
    value: float = Field(description="This variant's acceptance rate minus the control's.")
    interval: Interval = Field(description="95 % interval (Newcombe, from Wilson intervals).")


class VariantReport(BaseModel):
    name: str
    policy: str
    weight: float
    customers: int = Field(description="Distinct customers decided for.")
    decisions: int = Field(description="Invoices decided.")
    offers_shown: int
    accepted: int = Field(description="Decisions where the customer accepted an offer.")
    acceptance_rate: float | None = Field(description="accepted / decisions; null without any.")
    acceptance_interval: Interval | None = Field(description="95 % Wilson interval.")
    difference: Difference | None = Field(description="Against the control; null for it.")


class ExperimentReport(BaseModel):
    key: str
    description: str
    start: dt.datetime
    end: dt.datetime
    control: str
    confidence: float
    variants: list[VariantReport]


# Operations -------------------------------------------------------------------------------------


class Live(BaseModel):
    status: Literal["live"]


class Ready(BaseModel):
    status: Literal["ready"]
    model_version: str | None = Field(description="The ranker in use; null when rules decide.")
    churn_model_version: str | None


class ModelsPublic(BaseModel):
    """The models serving now."""

    model_version: str | None
    churn_model_version: str | None
    changed: bool = Field(description="Whether this reload changed a model.")
    others_follow_within_seconds: float = Field(
        description="This reload reaches the worker that received it; every other worker and "
        "replica asks the registry this often (OFFERS_MODEL_POLL_SECONDS) and loads the same "
        "champion then."
    )
