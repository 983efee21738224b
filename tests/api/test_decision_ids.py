"""Decision ids: the API's sort by when they were made, a billing run's by the run's order."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from serving.decision_log.ids import (
    DECISION_NAMESPACE,
    billing_run_decision_ids,
    new_decision_id,
)

DAY = dt.date(2026, 11, 20)


def test_a_billing_runs_ids_sort_in_the_runs_order_and_are_the_same_run_after_run() -> None:
    invoices = [f"INV-2026-11-{n:07d}" for n in (907, 12, 5_003, 44, 1)]
    ids = billing_run_decision_ids(DAY, invoices)
    assert ids == sorted(ids)  # the given order, not the invoice ids' own
    assert len(set(ids)) == len(ids)
    assert billing_run_decision_ids(DAY, invoices) == ids
    for place, decision_id in enumerate(ids):
        parsed = uuid.UUID(decision_id)
        assert (parsed.version, parsed.variant) == (8, uuid.RFC_4122)
        assert str(parsed) == decision_id
        # The billing date's day number, then the invoice's place in the day.
        assert parsed.int >> 112 == (DAY - dt.date(1970, 1, 1)).days
        assert (parsed.int >> 80) & 0xFFFF_FFFF == place
        # Then the invoice id's uuid5, less the bits that name the variant and version.
        hashed = uuid.uuid5(DECISION_NAMESPACE, invoices[place]).int
        outside_stamps = (1 << 80) - 1 & ~((0xC000 << 48) | (0xF000 << 64))
        assert parsed.int & outside_stamps == hashed & outside_stamps


def test_a_billing_runs_id_depends_on_the_invoice_its_place_and_its_day() -> None:
    first = billing_run_decision_ids(DAY, ["INV-A", "INV-B"])
    # Another invoice at the same place, the same invoice at another place or day: other ids.
    assert billing_run_decision_ids(DAY, ["INV-C"])[0] != first[0]
    assert billing_run_decision_ids(DAY, ["INV-B", "INV-A"])[1] != first[0]
    assert billing_run_decision_ids(DAY + dt.timedelta(days=1), ["INV-A"])[0] != first[0]
    # A later billing date's ids sort after an earlier one's, whatever their places.
    later = billing_run_decision_ids(DAY + dt.timedelta(days=1), ["INV-Z"])[0]
    assert later > billing_run_decision_ids(DAY, [f"I{n}" for n in range(1_000)])[-1]


def test_a_billing_date_outside_the_ids_range_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="invoice date 1969-12-31 is outside 1970–2149"):
        billing_run_decision_ids(dt.date(1969, 12, 31), ["INV-1"])
    with pytest.raises(ValueError, match="invoice date 2150-01-01"):
        billing_run_decision_ids(dt.date(2150, 1, 1), ["INV-1"])


def test_the_apis_ids_are_uuid7_and_sort_by_when_they_were_made() -> None:
    made = []
    for _ in range(3):
        made.append(new_decision_id())
        time.sleep(0.002)
    assert made == sorted(made)
    assert len(set(made)) == 3
    for decision_id in made:
        parsed = uuid.UUID(decision_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        made_at = dt.datetime.fromtimestamp((parsed.int >> 80) / 1000, dt.UTC)
        assert abs((dt.datetime.now(dt.UTC) - made_at).total_seconds()) < 5
    # Ids of one millisecond differ in their random bits.
    assert len({new_decision_id() for _ in range(1_000)}) == 1_000
