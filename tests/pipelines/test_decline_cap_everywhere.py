"""One decline cap, asked the three ways the project asks it, gives one answer on the same cases.

The pure rule; the decision log's look-up on the API's request path (SQLite and PostgreSQL); and
``offer_events`` as the batch invoice run and the off-policy evaluation read it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import pandas as pd
import pytest

from pipelines.evaluation_oracle import capped_candidates
from pipelines.invoice_run import recent_declines, recent_declines_by_invoice
from serving.decision.decline_cap import Decline, DeclineCap
from serving.decision_log import DecisionLog, DecisionRecord, EventRecord, LoggedOffer

pytestmark = pytest.mark.integration

FIRST_INVOICE = dt.datetime(2026, 1, 1, 6, 0, tzinfo=dt.UTC)
NOT_DECLINED = "PLAN_60GB"  # shown on every invoice, clicked, never declined
OFFERS = ("PLAN_15GB", "PLAN_30GB", NOT_DECLINED, "ADDON_DATA_10GB", "ADDON_ROAMING")
# Another customer declines on the same days, offers the first customer may or may not have.
OTHER_DECLINES = ("PLAN_30GB", NOT_DECLINED, "ADDON_ROAMING")


@dataclass(frozen=True)
class Case:
    """C1's invoices, oldest first, each with the offers declined on it; the cap; the answer."""

    name: str
    history: tuple[tuple[str, ...], ...]
    cap: int
    expected: frozenset[str]


CASES = [
    Case("declined on the last invoice", ((), (), ("PLAN_30GB",)), 3, frozenset({"PLAN_30GB"})),
    Case("declined exactly N invoices ago", (("PLAN_30GB",), (), ()), 3, frozenset({"PLAN_30GB"})),
    Case("declined N+1 invoices ago", (("PLAN_30GB",), (), (), ()), 3, frozenset()),
    Case(
        "declined twice, the later within N",
        (("PLAN_30GB",), (), (), ("PLAN_30GB",), ()),
        3,
        frozenset({"PLAN_30GB"}),
    ),
    Case(
        "declined twice, both longer ago",
        (("PLAN_30GB",), ("PLAN_30GB",), (), (), ()),
        3,
        frozenset(),
    ),
    Case(
        "declined twice on one invoice",
        ((), ("PLAN_30GB", "PLAN_30GB"), ()),
        3,
        frozenset({"PLAN_30GB"}),
    ),
    Case(
        "several offers, one aged out",
        (("ADDON_ROAMING",), ("PLAN_15GB",), (), ("PLAN_30GB", "ADDON_DATA_10GB")),
        3,
        frozenset({"PLAN_15GB", "PLAN_30GB", "ADDON_DATA_10GB"}),
    ),
    Case("a cap of one invoice", (("PLAN_15GB",), ("PLAN_30GB",)), 1, frozenset({"PLAN_30GB"})),
    Case("no cap", ((), ("PLAN_30GB",)), 0, frozenset()),
    Case("no invoices yet", (), 3, frozenset()),
]


@dataclass(frozen=True)
class Invoice:
    customer_id: str
    number: int
    declined: tuple[str, ...]

    @property
    def decision_id(self) -> str:
        return f"{self.customer_id}-D{self.number}"

    @property
    def shown_at(self) -> dt.datetime:
        return FIRST_INVOICE + dt.timedelta(days=30 * self.number)

    @property
    def shown(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.declined, NOT_DECLINED)))


def invoices(case: Case) -> list[Invoice]:
    """C1's invoices, and C2's declines on invoices of the same days as C1's latest two."""
    own = [Invoice("C1", number, declined) for number, declined in enumerate(case.history)]
    start = max(len(case.history) - 2, 0)
    other = [Invoice("C2", number, OTHER_DECLINES) for number in range(start, start + 2)]
    return own + other


def next_invoice(case: Case) -> dt.datetime:
    """When C1's next invoice is decided."""
    return FIRST_INVOICE + dt.timedelta(days=30 * len(case.history))


def by_rule(case: Case) -> frozenset[str]:
    own = [invoice for invoice in invoices(case) if invoice.customer_id == "C1"]
    declines = [Decline(offer, i.decision_id) for i in own for offer in i.declined]
    latest = [invoice.decision_id for invoice in reversed(own)]
    return DeclineCap(case.cap).capped(declines, latest)


def offer_events(case: Case) -> pd.DataFrame:
    """The cases' invoices as offer_events rows: one per offer shown, declines a day later."""
    rows = [
        {
            "decision_id": invoice.decision_id,
            "invoice_id": f"INV-{invoice.decision_id}",
            "customer_id": invoice.customer_id,
            "offer_id": offer,
            "shown_at": pd.Timestamp(invoice.shown_at),
            "rank": rank,
            "policy": "model",
            "propensity": 0.5,
            "outcome": "declined" if offer in invoice.declined else "clicked",
            "outcome_at": pd.Timestamp(invoice.shown_at + dt.timedelta(days=1)),
        }
        for invoice in invoices(case)
        for rank, offer in enumerate(invoice.shown, start=1)
    ]
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else None)


def by_invoice_run(case: Case) -> frozenset[str]:
    events = offer_events(case)
    if events.empty:
        return frozenset()
    declined = recent_declines(events, next_invoice(case), case.cap, ["C1", "C2"])
    # As the run reads it: per invoice of the day being decided.
    day = pd.DataFrame({"invoice_id": ["NEXT-1", "NEXT-2"], "customer_id": ["C1", "C2"]})
    by_invoice = recent_declines_by_invoice(events, next_invoice(case), case.cap, day)
    assert by_invoice.get("NEXT-1", frozenset()) == declined.get("C1", frozenset())
    return by_invoice.get("NEXT-1", frozenset())


def by_evaluation(case: Case) -> frozenset[str]:
    """The candidates of C1's next decision the evaluation drops as capped."""
    candidates = pd.DataFrame(
        {
            "decision_id": "C1-next",
            "customer_id": "C1",
            "offer_id": list(OFFERS),
            "event_timestamp": pd.Timestamp(next_invoice(case)),
        }
    )
    events = offer_events(case)
    if events.empty:
        return frozenset()
    capped = capped_candidates(events, candidates, DeclineCap(case.cap))
    return frozenset(candidates.loc[capped, "offer_id"])


def logged(log: DecisionLog, case: Case) -> None:
    """The cases' invoices as the API logs them: the decision, then the customer's events."""
    for invoice in invoices(case):
        log.record(
            DecisionRecord(
                decision_id=invoice.decision_id,
                invoice_id=f"INV-{invoice.decision_id}",
                customer_id=invoice.customer_id,
                invoice_date=invoice.shown_at.date(),
                created_at=invoice.shown_at,
                policy="model",
                model_version="offer-ranker/1",
                experiment_key=None,
                experiment_variant=None,
                degraded=None,
                consent={"marketing": True},
                response_json="{}",
                log={},
                offers=tuple(
                    LoggedOffer(offer, rank, 0.5, 1.0)
                    for rank, offer in enumerate(invoice.shown, start=1)
                ),
            )
        )
        happened = [(offer, "decline") for offer in invoice.declined] + [(NOT_DECLINED, "click")]
        for offer, kind in happened:
            at = invoice.shown_at + dt.timedelta(days=1)
            log.record_event(
                EventRecord(f"E-{uuid.uuid4().hex}", invoice.decision_id, offer, kind, at, at)
            )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_log_the_invoice_run_and_the_evaluation_follow_the_rule(
    case: Case, log: DecisionLog
) -> None:
    assert by_rule(case) == case.expected
    logged(log, case)
    assert log.recent_declines("C1", case.cap) == case.expected
    assert by_invoice_run(case) == case.expected
    assert by_evaluation(case) == case.expected


def test_the_other_customers_declines_are_their_own(log: DecisionLog) -> None:
    case = CASES[0]
    logged(log, case)
    assert log.recent_declines("C2", 3) == frozenset(OTHER_DECLINES)
    declined = recent_declines(offer_events(case), next_invoice(case), 3)
    assert declined == {"C1": case.expected, "C2": frozenset(OTHER_DECLINES)}
