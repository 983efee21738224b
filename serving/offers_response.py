"""The body of an offers decision (docs/http-api.md): what POST /v1/offers answers and what the
batch invoice run writes for each invoice, so that both give the same bytes for one decision."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

import pydantic_core
from pydantic import BaseModel, Field

from serving.decision.consent import Policy

if TYPE_CHECKING:
    from serving.decision.engine import Decision


class ConsentPublic(BaseModel):
    marketing: bool
    profiling: bool
    usage_insights: bool


class ExperimentAssignment(BaseModel):
    key: str
    variant: str


class ReasonPublic(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. usage_above_allowance.")
    text: str = Field(description="The reason in the customer's language.")


class ContributionPublic(BaseModel):
    feature: str
    value: float | None
    contribution: float


class OfferPublic(BaseModel):
    offer_id: str
    rank: int = Field(ge=1)
    kind: Literal["plan", "addon", "loyalty", "payment_help"]
    title: str
    monthly_fee_sek: float
    acceptance_probability: float | None = Field(default=None, ge=0.0, le=1.0)
    expected_value_sek: float | None = None
    customer_saving_sek_per_month: float | None = None
    personalised: bool
    reasons: list[ReasonPublic]
    contributions: list[ContributionPublic] = Field(
        default_factory=list, description="Only when the customer granted profiling."
    )


class PeriodPublic(BaseModel):
    start: dt.date = Field(description="First day of the newest usage month.")
    end: dt.date = Field(description="Its last day.")


class PlanPublic(BaseModel):
    plan_id: str
    title: str
    monthly_fee_sek: float


class PeriodPlanPublic(BaseModel):
    plan_id: str
    title: str


class UsageLinePublic(BaseModel):
    measure: Literal["data", "voice", "sms", "roaming"]
    used: float | None
    included: float | None = Field(description="What the period's plan included; null = unlimited.")
    unit: Literal["GB", "min", "sms"]


class ExtraChargePublic(BaseModel):
    kind: Literal["data_overage", "voice_overage", "roaming_overage", "invoice_fee", "reminder_fee"]
    amount_sek: float
    explanation: str = Field(description="Why it was charged, in the customer's language.")


class TrendPointPublic(BaseModel):
    month: dt.date | None
    used: float | None


class TrendPublic(BaseModel):
    measure: Literal["data", "voice", "roaming", "overage"]
    unit: Literal["GB", "min", "SEK"]
    months: list[TrendPointPublic] = Field(description="Oldest first, the newest month last.")


class PlanFitPublic(BaseModel):
    plan_id: str = Field(description="The plan that would have cost least; today's when none.")
    title: str
    monthly_fee_sek: float
    cost_sek_per_month: float
    current_cost_sek_per_month: float
    saving_sek_per_month: float
    months: int
    explanation: str


class UsageSummary(BaseModel):
    """What the customer used and paid for; shown whatever the marketing consent."""

    period: PeriodPublic | None
    plan: PlanPublic
    period_plan: PeriodPlanPublic | None = Field(
        default=None,
        description="The plan the period was billed on, when the customer has changed plan "
        "since; its usage lines and extra charges are read against it. null: today's plan.",
    )
    binding_end_date: dt.date | None
    usage: list[UsageLinePublic]
    extra_charges: list[ExtraChargePublic]
    extra_charges_total_sek: float
    detail_level: Literal["basic", "detailed"] = Field(
        description="detailed (trends and plan fit) only with usage_insights consent."
    )
    trends: list[TrendPublic] | None = Field(description="detailed only.")
    plan_fit: PlanFitPublic | None = Field(description="detailed only.")


class OffersResponse(BaseModel):
    """The decision for one invoice; the same invoice_id always gets this same answer."""

    decision_id: str
    invoice_id: str
    customer_id: str
    policy: Policy
    model_version: str | None
    experiment: ExperimentAssignment | None
    consent: ConsentPublic
    offers: list[OfferPublic]
    usage_summary: UsageSummary | None = Field(
        description="As GET /v1/customers/{id}/usage-summary; null when features are unavailable."
    )
    degraded: str | None = Field(
        description="null, or why the answer was made without a part: feature_store_unavailable, "
        "model_unavailable, …"
    )
    dry_run: bool = Field(
        default=False,
        exclude_if=lambda value: not value,
        description="Present, and true, only in the answer to a dry run: nothing was logged, "
        "counted or stored, and no event can refer to its decision_id.",
    )

    @classmethod
    def for_decision(cls, decision: Decision, decision_id: str) -> OffersResponse:
        """The response body of an engine decision, validated against this schema."""
        return cls.model_validate({"decision_id": decision_id, **decision.to_public_dict()})


def offers_answer_json(decision: Decision, decision_id: str, *, dry_run: bool = False) -> str:
    """The POST /v1/offers body of a decision, as the decision log stores it; a dry run's says
    ``"dry_run": true`` and is stored nowhere.

    Written straight from the engine's public dict by pydantic's own JSON writer, in the field
    order of :class:`OffersResponse`, NaN as null: the same bytes as validating the dict into
    :class:`OffersResponse` and writing that (a test holds the two equal over a simulated world's
    decisions), at a third of the cost, which every invoice decided pays."""
    body = {"decision_id": decision_id, **decision.to_public_dict()}
    if dry_run:
        body["dry_run"] = True
    return pydantic_core.to_json(body, inf_nan_mode="null").decode()
