"""The input tables of docs/data-contract.md: names, columns, types and keys, defined once.

Every stage that reads the raw tables takes the column names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from core.columns import CUSTOMER_KEY

ColumnKind = Literal["str", "int", "float", "date", "timestamp", "bool"]

ARROW_TYPES: dict[ColumnKind, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def file_name(self) -> str:
        return f"{self.name}.parquet"

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in self.columns]
        )


CUSTOMERS = Table(
    "customers",
    (CUSTOMER_KEY,),
    (
        Column(CUSTOMER_KEY, "str"),
        Column("birth_year", "int"),
        Column("signup_date", "date"),
        Column("region", "str"),
        Column("segment", "str"),
        Column("satisfaction", "int", nullable=True),
    ),
)
CONTRACTS = Table(
    "contracts",
    (CUSTOMER_KEY, "valid_from"),
    (
        Column(CUSTOMER_KEY, "str"),
        Column("plan_id", "str"),
        Column("valid_from", "date"),
        Column("valid_to", "date", nullable=True),
        Column("binding_end_date", "date", nullable=True),
        Column("monthly_fee_sek", "float"),
    ),
)
USAGE_MONTHLY = Table(
    "usage_monthly",
    (CUSTOMER_KEY, "month"),
    (
        Column(CUSTOMER_KEY, "str"),
        Column("month", "date"),
        Column("data_gb", "float"),
        Column("voice_minutes", "float"),
        Column("sms", "int"),
        Column("roaming_days", "int"),
        Column("roaming_data_gb", "float"),
        Column("overage_sek", "float"),
    ),
)
INVOICES = Table(
    "invoices",
    ("invoice_id",),
    (
        Column("invoice_id", "str"),
        Column(CUSTOMER_KEY, "str"),
        Column("invoice_date", "date"),
        Column("due_date", "date"),
        Column("amount_sek", "float"),
        Column("invoice_fee_sek", "float"),
        Column("reminder_fee_sek", "float"),
        Column("paid_date", "date", nullable=True),
        Column("reminders", "int"),
        Column("sent_to_collection", "bool"),
    ),
)
CONSENTS = Table(
    "consents",
    (CUSTOMER_KEY, "purpose", "updated_at"),
    (
        Column(CUSTOMER_KEY, "str"),
        Column("purpose", "str"),
        Column("granted", "bool"),
        Column("updated_at", "timestamp"),
    ),
)
OFFER_EVENTS = Table(
    "offer_events",
    ("decision_id", "offer_id"),
    (
        Column("decision_id", "str"),
        Column("invoice_id", "str"),
        Column(CUSTOMER_KEY, "str"),
        Column("offer_id", "str"),
        Column("shown_at", "timestamp"),
        Column("rank", "int"),
        Column("policy", "str"),
        Column("propensity", "float", nullable=True),
        Column("outcome", "str"),
        Column("outcome_at", "timestamp", nullable=True),
    ),
)

TABLES: tuple[Table, ...] = (CUSTOMERS, CONTRACTS, USAGE_MONTHLY, INVOICES, CONSENTS, OFFER_EVENTS)
TABLES_BY_NAME: dict[str, Table] = {table.name: table for table in TABLES}

SEGMENTS = ("consumer", "business")
CONSENT_PURPOSES = ("marketing", "profiling", "usage_insights")
OUTCOMES = ("ignored", "clicked", "accepted", "declined")
OFFER_KINDS = ("plan", "addon", "loyalty", "payment_help")

# Not an input table: the simulated survey, used to check the simulator's calibration.
SURVEY_QUESTIONS = (
    "invoice_only_contact",
    "visits_web_monthly",
    "thinks_of_switching_at_invoice",
    "evaluates_at_invoice",
    "amount_often_too_high",
    "open_to_better_fitting_offer",
    "wants_usage_info_on_invoice",
    "fees_could_make_switch",
    "worse_when_new_customers_get_better_deals",
)
SURVEY_RESPONSES = Table(
    "survey_responses",
    (CUSTOMER_KEY,),
    (
        Column(CUSTOMER_KEY, "str"),
        Column("surveyed_at", "timestamp"),
        *(Column(question, "bool") for question in SURVEY_QUESTIONS),
    ),
)
