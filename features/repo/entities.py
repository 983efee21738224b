"""Feast entities: the customer on the invoice and the offer that may be shown on it."""

from __future__ import annotations

from feast import Entity, ValueType

from core.columns import CUSTOMER_KEY, OFFER_KEY
from features.views import OWNER, TEAM

customer = Entity(
    name="customer",
    join_keys=[CUSTOMER_KEY],
    value_type=ValueType.STRING,
    description="A subscriber of the operator, as in the customers table (customer_id).",
    owner=OWNER,
    tags={"team": TEAM, "personal_data": "true"},
)

offer = Entity(
    name="offer",
    join_keys=[OFFER_KEY],
    value_type=ValueType.STRING,
    description="A catalog entry (offer_id): a plan, add-on, loyalty price or payment help.",
    owner=OWNER,
    tags={"team": TEAM, "personal_data": "false"},
)
