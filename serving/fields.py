"""Field rules shared by the HTTP API's bodies and the commands that take the same input
(identifiers, times in UTC, free text), so that both refuse the same values with the same words."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

from serving.decision.consent import MODEL_PREFIX, REQUESTABLE

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
