"""The decline cap: a declined offer stays away for the customer's next N invoices, no longer."""

from __future__ import annotations

import numpy as np
import pytest

from serving.decision.decline_cap import Decline, DeclineCap

LATEST = ["D5", "D4", "D3", "D2", "D1"]  # the customer's invoices' decisions, newest first


@pytest.mark.parametrize(
    ("invoices_ago", "blocked"),
    [(0, False), (1, True), (2, True), (3, True), (4, False), (12, False)],
)
def test_a_decline_blocks_for_the_next_n_invoices(invoices_ago: int, blocked: bool) -> None:
    assert DeclineCap(3).blocks(invoices_ago) is blocked


def test_blocks_works_element_wise_on_arrays() -> None:
    ago = np.array([0, 1, 3, 4, -1])
    assert DeclineCap(3).blocks(ago).tolist() == [False, True, True, False, False]


def test_no_cap_blocks_nothing() -> None:
    cap = DeclineCap(0)
    assert cap.window == 0
    assert not cap.blocks(1)
    assert cap.capped([Decline("PLAN_30GB", "D5")], LATEST) == frozenset()


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        DeclineCap(-1)


@pytest.mark.parametrize(
    ("declines", "expected"),
    [
        ([("PLAN_30GB", "D5")], {"PLAN_30GB"}),  # on the last invoice
        ([("PLAN_30GB", "D3")], {"PLAN_30GB"}),  # exactly three invoices ago
        ([("PLAN_30GB", "D2")], set()),  # four invoices ago
        ([("PLAN_30GB", "D1"), ("PLAN_30GB", "D4")], {"PLAN_30GB"}),  # twice: the later counts
        ([("PLAN_30GB", "D1"), ("PLAN_30GB", "D2")], set()),  # twice, both too long ago
        ([("PLAN_30GB", "D5"), ("ADDON_DATA_10GB", "D4")], {"PLAN_30GB", "ADDON_DATA_10GB"}),
        ([("PLAN_30GB", "D0")], set()),  # a decision that is not among the customer's latest
        ([], set()),
    ],
)
def test_the_offers_capped_for_a_customer(
    declines: list[tuple[str, str]], expected: set[str]
) -> None:
    capped = DeclineCap(3).capped([Decline(*decline) for decline in declines], LATEST)
    assert capped == frozenset(expected)


def test_only_the_window_of_latest_decisions_is_needed() -> None:
    cap = DeclineCap(2)
    declines = [Decline("PLAN_30GB", "D4"), Decline("ADDON_DATA_10GB", "D3")]
    assert cap.window == 2
    assert cap.capped(declines, LATEST[: cap.window]) == cap.capped(declines, LATEST)
    assert cap.capped(declines, LATEST) == {"PLAN_30GB"}


def test_a_customer_without_invoices_has_nothing_capped() -> None:
    assert DeclineCap(3).capped([Decline("PLAN_30GB", "D1")], []) == frozenset()
