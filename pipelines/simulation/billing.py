"""Invoices and payments: fees, late payment, reminders and collection.

An invoice for a usage month is dated on the customer's billing day in the next month and is due
30 days later. A paper invoice costs 29 SEK. Each reminder costs 60 SEK and is charged on a later
invoice (the first one dated after the reminder, which is the second invoice after the reminded
one). An invoice still unpaid 45 days after its due date goes to collection and stays unpaid.
Nothing after the world's last day is known: later payments, reminders and collections are not
in the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.calendar import as_days
from pipelines.simulation.timeline import OPEN_END

INVOICE_FEE_SEK = 29.0
REMINDER_FEE_SEK = 60.0
DUE_DAYS = 30
REMINDER_AFTER_DUE_DAYS = (10, 24)
COLLECTION_AFTER_DUE_DAYS = 45
NOT_A_DATE = np.datetime64("NaT", "D")


def _earliest(current: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The earlier of two dates, where NaT means none yet."""
    return np.where(np.isnat(current), new, np.minimum(current, new))


@dataclass(frozen=True)
class InvoiceBatch:
    """The invoices issued in one month, one per customer in ``customers``."""

    customers: np.ndarray
    invoice_date: np.ndarray
    due_date: np.ndarray
    amount_sek: np.ndarray
    invoice_fee_sek: np.ndarray
    reminder_fee_sek: np.ndarray
    paid_date: np.ndarray
    reminders: np.ndarray
    sent_to_collection: np.ndarray


class PaymentLedger:
    """Per customer: reminder fees still to charge, and the latest reminder and collection."""

    def __init__(self, size: int, payment_risk: np.ndarray) -> None:
        self.payment_risk = payment_risk.copy()
        self.fee_on_next = np.zeros(size)
        self.fee_on_one_after = np.zeros(size)
        self.reminded_from = np.full(size, NOT_A_DATE)
        self.reminded_until = np.full(size, NOT_A_DATE)
        self.collection_from = np.full(size, NOT_A_DATE)

    def in_collection(self, customers: np.ndarray, day: np.datetime64) -> np.ndarray:
        since = self.collection_from[customers]
        return ~np.isnat(since) & (since <= day)

    def unpaid_reminders(self, customers: np.ndarray, day: np.datetime64) -> np.ndarray:
        since = self.reminded_from[customers]
        return ~np.isnat(since) & (since <= day) & (day < self.reminded_until[customers])

    def settle(self, customers: np.ndarray) -> None:
        """An instalment plan: the debt is arranged, and paying late becomes rarer."""
        self.collection_from[customers] = NOT_A_DATE
        self.reminded_from[customers] = NOT_A_DATE
        self.reminded_until[customers] = NOT_A_DATE
        self.payment_risk[customers] *= 0.5

    def issue(
        self,
        rng: np.random.Generator,
        customers: np.ndarray,
        invoice_date: np.ndarray,
        usage_cost_sek: np.ndarray,
        paper_invoice: np.ndarray,
        last_known_day: np.datetime64,
    ) -> InvoiceBatch:
        """Issue invoices for ``usage_cost_sek`` (monthly fee plus overage) and draw payment."""
        n = len(customers)
        invoice_date = as_days(invoice_date)
        due = invoice_date + np.timedelta64(DUE_DAYS, "D")
        invoice_fee = np.where(paper_invoice, INVOICE_FEE_SEK, 0.0)
        reminder_fee = self.fee_on_next[customers]

        late = rng.random(n) < self.payment_risk[customers]
        struggling = self.payment_risk[customers] > 0.2
        days_late = np.ceil(rng.exponential(np.where(struggling, 30.0, 12.0))).astype(np.int64)
        days_early = rng.integers(0, 21, n)
        paid = np.where(
            late,
            due + days_late.astype("timedelta64[D]"),
            due - days_early.astype("timedelta64[D]"),
        )
        days_late = np.where(late, days_late, 0)
        collection = days_late > COLLECTION_AFTER_DUE_DAYS
        paid = np.where(collection, NOT_A_DATE, paid)
        first, second = (due + np.timedelta64(d, "D") for d in REMINDER_AFTER_DUE_DAYS)
        reminders = (days_late > REMINDER_AFTER_DUE_DAYS[0]).astype(np.int64) + (
            days_late > REMINDER_AFTER_DUE_DAYS[1]
        )
        collection_day = due + np.timedelta64(COLLECTION_AFTER_DUE_DAYS, "D")

        # Owing after a reminder: from the earliest reminder still open to the latest payment
        # (a gap between two reminded invoices counts as owing too).
        reminded = reminders > 0
        who = customers[reminded]
        until = np.where(np.isnat(paid[reminded]), OPEN_END, paid[reminded])
        self.reminded_from[who] = _earliest(self.reminded_from[who], first[reminded])
        self.reminded_until[who] = np.where(
            np.isnat(self.reminded_until[who]), until, np.maximum(self.reminded_until[who], until)
        )
        who = customers[collection]
        self.collection_from[who] = _earliest(self.collection_from[who], collection_day[collection])
        self.fee_on_next[customers] = self.fee_on_one_after[customers]
        self.fee_on_one_after[customers] = REMINDER_FEE_SEK * reminders

        # What the tables can know on the world's last day.
        known_reminders = ((reminders >= 1) & (first <= last_known_day)).astype(np.int64) + (
            (reminders >= 2) & (second <= last_known_day)
        )
        return InvoiceBatch(
            customers=customers,
            invoice_date=invoice_date,
            due_date=due,
            amount_sek=np.round(usage_cost_sek + invoice_fee + reminder_fee, 2),
            invoice_fee_sek=invoice_fee,
            reminder_fee_sek=reminder_fee,
            paid_date=np.where(paid <= last_known_day, paid, NOT_A_DATE),
            reminders=known_reminders,
            sent_to_collection=collection & (collection_day <= last_known_day),
        )
