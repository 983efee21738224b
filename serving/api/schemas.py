"""Request and response bodies of the HTTP API (docs/http-api.md), in families per resource."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)

from core.columns import CUSTOMER_KEY
from serving.api.errors import Problem, ValidationProblem
from serving.decision.inputs import Locale
from serving.experiment_definition import ExperimentCreate
from serving.fields import (
    INVOICE_DATE_DESCRIPTION,
    EventType,
    Identifier,
    IsoDate,
    JsonInt,
    UtcDatetime,
    ZonedDatetime,
)
from serving.offers_response import OffersResponse

# A UUID as text: 8-4-4-4-12 hex digits.
_UUID_TEXT = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")

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
    decision_id: Identifier = Field(
        description="As the decision answered it; a UUID's hex digits in either case."
    )
    offer_id: Identifier
    type: EventType
    occurred_at: UtcDatetime = Field(
        description=(
            "When the customer did it (UTC without a zone); not more than 5 minutes before its "
            "decision was made nor ahead of the server's clock."
        )
    )

    @field_validator("decision_id")
    @classmethod
    def _uuid_in_lower_case(cls, value: str) -> str:
        # Decision ids are UUIDs, stored as str(uuid) writes them: in lower case. A UUID is the
        # same whatever the case of its hex digits, so a renderer that upper-cases ids still
        # names the decision it means.
        return value.lower() if _UUID_TEXT.fullmatch(value) else value


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

    change_id: Identifier | None = Field(
        default=None,
        description=(
            "The caller's id for this answer; without one, an id derived from the answer "
            "(customer, purpose, granted, updated_at), so the same answer sent again is "
            "stored once."
        ),
    )
    customer_id: Identifier
    purpose: ConsentPurpose
    granted: bool = Field(strict=True)
    updated_at: ZonedDatetime | None = Field(
        default=None,
        description=(
            "When the customer answered, with its zone; at most 5 minutes ahead of now. "
            "Without it: the moment the answer is received."
        ),
    )

    @field_validator("updated_at")
    @classmethod
    def _not_ahead(cls, value: dt.datetime | None) -> dt.datetime | None:
        latest = dt.datetime.now(dt.UTC) + CONSENT_CLOCK_SKEW
        if value is not None and value > latest:
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


class ExperimentPublic(ExperimentCreate):
    model_config = ConfigDict(extra="ignore")

    control: str | None = Field(
        description="The variant the others are compared with, when one was named; the report "
        "names the one used."
    )
    created_at: dt.datetime
    stopped_at: dt.datetime | None = Field(
        default=None, description="When it was stopped before its end; null otherwise."
    )


class ExperimentsPublic(BaseModel):
    data: list[ExperimentPublic]
    count: int


class Interval(BaseModel):
    low: float
    high: float


class Difference(BaseModel):
    against: str = Field(description="The control variant.")
    value: float = Field(description="This variant's value minus the control's.")
    interval: Interval | None = Field(
        description="95 % interval; null while it cannot be estimated."
    )
    p_value: float | None = Field(
        description="Two-sided p-value of no difference; null while it cannot be computed."
    )


class ChurnReport(BaseModel):
    followed: int = Field(description="Customers whose follow-up window has ended in the data.")
    churned: int = Field(description="Of them, customers whose last contract ended within it.")
    rate: float | None
    interval: Interval | None = Field(description="95 % Wilson interval.")


class VariantReport(BaseModel):
    name: str
    policy: str
    weight: float
    customers: int = Field(description="Enrolled customers (the unit that is randomised).")
    decisions: int = Field(description="Invoices decided.")
    offers_shown: int
    impressions: int = Field(description="Impression events (offers seen).")
    impressions_per_customer: float | None
    clicks: int = Field(description="Decisions with a click.")
    click_rate: float | None = Field(description="clicks / decisions, over customers.")
    click_interval: Interval | None = Field(
        description="95 % delta-method interval, customers as clusters."
    )
    accepted: int = Field(description="Decisions where the customer accepted an offer.")
    acceptance_rate: float | None = Field(description="accepted / decisions; null without any.")
    acceptance_interval: Interval | None = Field(
        description="95 % delta-method interval, customers as clusters."
    )
    revenue_change_sek_per_customer: float | None = Field(
        description=(
            "Mean over customers of the monthly bill change their accepted offers make: the "
            "negative of the logged customer saving, else the offer's fee change."
        )
    )
    revenue_change_interval: Interval | None
    churn: ChurnReport | None = Field(
        description="Null when the contracts table cannot be read (see warnings)."
    )
    objections: int = Field(description="Customers who withdrew marketing consent after enrolment.")
    objection_rate: float | None
    objection_interval: Interval | None = Field(description="95 % Wilson interval.")
    difference: Difference | None = Field(
        description="Acceptance rate against the control; null for it and while either side "
        "has no decisions."
    )
    differences: dict[str, Difference] = Field(
        description="Every metric against the control, by name: click_rate, acceptance_rate, "
        "revenue_change_sek_per_customer, churn_rate, objection_rate."
    )


class SampleRatioReport(BaseModel):
    observed: dict[str, int]
    expected: dict[str, float]
    chi_square: float
    p_value: float
    failed: bool = Field(description="p below 0.001: the split does not follow the weights.")


class MinimumDetectableEffect(BaseModel):
    metric: str
    alpha: float
    power: float
    by_variant: dict[str, float | None] = Field(
        description="Per variant but the control: the smallest absolute difference of the "
        "metric the current sample finds with this power."
    )


class CumulativePointReport(BaseModel):
    through: dt.date = Field(description="The last invoice date counted (a day, or a Sunday).")
    customers: int = Field(description="Customers with a decision so far.")
    decisions: int
    accepted: int
    acceptance_rate: float | None = Field(description="accepted / decisions so far; null without.")
    interval: Interval | None = Field(
        description="95 % delta-method interval, customers as clusters."
    )
    difference: Difference | None = Field(
        description="Against the control at the same date; null for the control."
    )


class CumulativeSeriesReport(BaseModel):
    variant: str
    points: list[CumulativePointReport]


class CumulativeReport(BaseModel):
    metric: Literal["acceptance_rate"]
    period: Literal["day", "week"] = Field(
        description="Per invoice date while the dates decided span under 31 days, else per ISO "
        "week (Monday to Sunday)."
    )
    control: str
    series: list[CumulativeSeriesReport] = Field(
        description="Per variant, one point at the end of every period with decisions."
    )


class ExperimentReport(BaseModel):
    key: str
    description: str
    layer: str
    status: Literal["scheduled", "running", "stopped", "ended"]
    start: dt.datetime
    end: dt.datetime
    stopped_at: dt.datetime | None
    control: str
    confidence: float
    customers: int
    planned_customers: int | None
    churn_window_days: int
    warnings: list[str] = Field(description="Plain warnings; a sample-ratio mismatch first.")
    srm: SampleRatioReport | None = Field(
        description="Chi-square test of customers per variant against the weights."
    )
    mde: MinimumDetectableEffect
    variants: list[VariantReport]
    cumulative: CumulativeReport = Field(
        description="Cumulative acceptance per variant over invoice dates, against the control."
    )


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
