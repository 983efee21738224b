"""Column names shared by the input tables, the feature tables and every stage that reads them."""

from __future__ import annotations

CUSTOMER_KEY = "customer_id"
OFFER_KEY = "offer_id"
INVOICE_KEY = "invoice_id"
PLAN_KEY = "plan_id"
EVENT_TIMESTAMP = "event_timestamp"
