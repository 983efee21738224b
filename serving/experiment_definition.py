"""An experiment's definition as marketing writes it, checked the same way for
``POST /v1/experiments`` and ``offers experiments create``."""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from serving.decision_log.records import DEFAULT_LAYER, ExperimentSpec, Variant
from serving.fields import (
    VARIANT_POLICY_PATTERN,
    WEIGHT_TOLERANCE,
    FreeText,
    Identifier,
    JsonInt,
    UtcDatetime,
)

EXAMPLE: dict[str, JsonValue] = {
    "key": "ranker-vs-rules",
    "description": "Does the ranker beat the rules?",
    "layer": "default",
    "variants": [
        {"name": "treatment", "weight": 0.45, "policy": "model"},
        {"name": "rules", "weight": 0.45, "policy": "rules"},
        {"name": "control", "weight": 0.10, "policy": "holdout"},
    ],
    "start": "2026-12-01T00:00:00Z",
    "end": "2027-02-28T23:59:59Z",
    "control": "treatment",
    "planned_customers": 20000,
}


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Identifier
    weight: float = Field(gt=0.0, le=1.0, allow_inf_nan=False, strict=True)
    policy: str = Field(
        pattern=VARIANT_POLICY_PATTERN,
        description="model, rules, non_personalised, holdout, or model:<version> (a challenger).",
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _known_policy(cls, value: object) -> object:
        # Said in words before the pattern would say it as a regular expression.
        if isinstance(value, str) and not re.fullmatch(VARIANT_POLICY_PATTERN, value):
            raise ValueError(
                f"{value!r} is no policy: model, rules, non_personalised, holdout or "
                "model:<version> (a registered offer-ranker version)"
            )
        return value


class ExperimentCreate(BaseModel):
    """An offer experiment: customers are split over the variants by weight while it runs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    key: Identifier
    description: FreeText = Field(default="", max_length=2000)
    layer: Identifier = Field(
        default=DEFAULT_LAYER,
        description="Experiments of one layer may not overlap in time (409 naming the other); "
        "each layer splits customers independently of the others.",
    )
    variants: list[VariantSpec] = Field(min_length=1, max_length=20)
    start: UtcDatetime
    end: UtcDatetime
    control: Identifier | None = Field(
        default=None,
        description="The variant the others are compared with; default the first variant with "
        "policy model (the champion), else the first variant.",
    )
    planned_customers: JsonInt | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="The customers the experiment was designed to enrol; a report read before "
        "that many are enrolled says so.",
    )

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
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control} is not one of the variants")
        return self

    def spec(self) -> ExperimentSpec:
        """The experiment as the experiments' logic takes it."""
        return ExperimentSpec(
            key=self.key,
            description=self.description,
            variants=tuple(Variant(v.name, v.weight, v.policy) for v in self.variants),
            start=self.start,
            end=self.end,
            layer=self.layer,
            control=self.control,
            planned_customers=self.planned_customers,
        )
