"""One consent answer applied to a customer's ``customer_consent`` row, without any I/O.

The consent view (``features/transforms/customer_consent.py``) computes each customer's row from
the whole ``consents`` table. The direct consent path (``POST /v1/consents`` and ``offers consents
sync``) changes one purpose of a row already in the online store instead; the rules here are the
view's rules for one answer, so the two paths agree: the purpose's flag becomes the answer, and a
marketing withdrawal is an objection when marketing was granted before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.contract import CONSENT_PURPOSES

# The consent view's feature holding each purpose's state.
PURPOSE_FEATURES: dict[str, str] = {
    "marketing": "consent_marketing",
    "profiling": "consent_profiling",
    "usage_insights": "consent_usage_insights",
}
OBJECTION_FEATURE = "objected_marketing"


@dataclass(frozen=True)
class ConsentAnswer:
    """One consent answer: a purpose granted or withdrawn at ``updated_at`` (UTC)."""

    customer_id: str
    purpose: str
    granted: bool
    updated_at: dt.datetime


def _flag(value: Any) -> bool:
    """A stored 0/1 flag; a missing value (None, NaN) is not granted."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def marketing_was_granted(row: Mapping[str, Any]) -> bool:
    """Whether the row shows marketing granted now or an objection (granted once, withdrawn)."""
    return _flag(row.get(PURPOSE_FEATURES["marketing"])) or _flag(row.get(OBJECTION_FEATURE))


def apply_consent_answer(
    row: Mapping[str, Any], purpose: str, granted: bool, *, granted_before: bool = False
) -> dict[str, Any]:
    """The consent row after one answer; every other value (other purposes, birth year,
    segment) is kept.

    A marketing withdrawal is an objection when marketing was granted before: the row says so
    (granted now, or already objected), or ``granted_before`` (an earlier answer the caller knows
    of granted it). A marketing grant ends an objection, as in the consent view.
    """
    feature = PURPOSE_FEATURES.get(purpose)
    if feature is None:
        raise ValueError(f"unknown consent purpose {purpose!r}; expected one of {CONSENT_PURPOSES}")
    updated = dict(row)
    updated[feature] = int(granted)
    if purpose == "marketing":
        was_granted = granted_before or marketing_was_granted(row)
        updated[OBJECTION_FEATURE] = int(not granted and was_granted)
    return updated


def answer_change_id(answer: ConsentAnswer, source: str = "file") -> str:
    """A change id derived from the answer itself, so that loading a file twice (or sending an
    answer without a ``change_id`` twice) stores it once; ``source`` says where it came from.

    Within the API's identifier rule (letters, digits, ``._-``, at most 64 characters).
    """
    moment = answer.updated_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    text = "\x1f".join((answer.customer_id, answer.purpose, str(bool(answer.granted)), moment))
    return f"{source}-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]
