"""Consent answers received through the API: stored durably, then written to the online store.

An objection holds from the next decision (GDPR Art. 21), so an answer cannot wait for the next
materialize: it is stored in the decision log's database first (nothing is lost when the store is
down) and then written into the customer's consent row in the online store, where the very next
decision reads it. Nothing here knows HTTP: the outcomes are a :class:`ConsentResult`, or
:class:`ConsentChangeConflict` and ``FeatureStoreUnavailable`` raised.

A materialize reloads the consent view from the consents table, which holds none of these answers;
``offers consents sync`` (``pipelines/consent_sync.py``) applies them again after it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from features.consent_changes import ConsentAnswer, apply_consent_answer
from features.consent_rows import ConsentRowWrite
from serving.decision_log import DecisionLog
from serving.decision_log.consents import (
    consent_changes_of,
    find_consent_change,
    mark_consent_changes_applied,
    record_consent_change,
)
from serving.decision_log.records import ConsentChangeRecord
from serving.feature_reader import FeatureStoreUnavailable, OpenFeatureStore
from serving.metrics import ApiMetrics

OnlineOutcome = Literal["applied", "superseded", "unknown-customer", "deferred"]
# Writes of one customer's row run one at a time in this process; customers share a lock only by
# the hash of their id, so the locks stay few.
LOCK_STRIPES = 64


class ConsentChangeConflict(Exception):
    """The change_id was stored before with another answer."""

    def __init__(self, change_id: str) -> None:
        super().__init__(f"change {change_id} was stored before with another answer")
        self.change_id = change_id


@dataclass(frozen=True)
class ConsentResult:
    """The stored change, what the online store now holds of it, and whether it was new."""

    change: ConsentChangeRecord
    online: OnlineOutcome
    created: bool


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ConsentService:
    """Stores a consent answer, then writes it into the customer's row in the online store."""

    def __init__(
        self,
        *,
        log: DecisionLog,
        feature_store: OpenFeatureStore,
        metrics: ApiMetrics,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.log = log
        self.feature_store = feature_store
        self.metrics = metrics
        self._clock = clock
        self._locks = tuple(threading.Lock() for _ in range(LOCK_STRIPES))

    def stored_updated_at(self, change_id: str) -> dt.datetime | None:
        """When the answer stored under ``change_id`` was given, or None when none is stored: a
        change sent again without its ``updated_at`` is the stored one, not a new moment."""
        stored = self.log.bounded(find_consent_change, self.log, change_id)
        return None if stored is None else stored.updated_at

    def record(self, change_id: str, answer: ConsentAnswer) -> ConsentResult:
        """Store the answer under ``change_id`` and apply it online.

        The same change_id again with the same answer stores nothing; a change not yet in the
        online store is pushed again. Raises :class:`ConsentChangeConflict` for the same
        change_id with another answer, and ``FeatureStoreUnavailable`` when the online store
        cannot be read or written (the change is stored by then).
        """
        received = ConsentChangeRecord(
            change_id=change_id,
            customer_id=answer.customer_id,
            purpose=answer.purpose,
            granted=answer.granted,
            updated_at=answer.updated_at,
            received_at=self._clock(),
        )
        stored, created = self.log.bounded(record_consent_change, self.log, received)
        if not created and not stored.same_answer(received):
            raise ConsentChangeConflict(change_id)
        if not created and stored.applied_at is not None:
            newer = self._newer_stored(stored, self._changes_of(stored.customer_id))
            return ConsentResult(stored, "superseded" if newer else "applied", created=False)
        online, applied_at = self._push(stored)
        if created:
            self.metrics.consent_changes.labels(online).inc()
        if applied_at is not None:
            stored = replace(stored, applied_at=applied_at)
        return ConsentResult(stored, online, created)

    def _push(self, change: ConsentChangeRecord) -> tuple[OnlineOutcome, dt.datetime | None]:
        """Write the change into the customer's online consent row, unless something stored or
        held online says it must not be."""
        with self._locks[hash(change.customer_id) % LOCK_STRIPES]:
            # Looked up under the lock: a newer change of this process stored meanwhile has then
            # either been written already, or finds this one written and overwrites it.
            changes = self._changes_of(change.customer_id)
            if self._newer_stored(change, changes):
                return "superseded", None
            granted_before = any(
                other.purpose == "marketing"
                and other.granted
                and other.updated_at < change.updated_at
                for other in changes
            )
            source = self.feature_store.current()
            if source is None:
                raise FeatureStoreUnavailable("not_open")
            current = source.read_consent_row(change.customer_id)
            if current is None:
                return "unknown-customer", None
            values = apply_consent_answer(
                current.values, change.purpose, change.granted, granted_before=granted_before
            )
            if values != current.values:
                stamped = current.event_time
                if change.granted and stamped is not None and stamped > change.updated_at:
                    # The row changed after this grant was given, and the online row does not
                    # say for which purpose: a newer withdrawal in the consents table may be the
                    # reason. A grant waits for the sync, which can tell; a withdrawal never
                    # waits, since it only ever takes consent away.
                    return "deferred", None
                event_time = max(change.updated_at, stamped or change.updated_at)
                source.write_consent_row(ConsentRowWrite(change.customer_id, values, event_time))
        applied_at = self._clock()
        self.log.bounded(mark_consent_changes_applied, self.log, [change.change_id], applied_at)
        return "applied", applied_at

    def _changes_of(self, customer_id: str) -> list[ConsentChangeRecord]:
        return self.log.bounded(consent_changes_of, self.log, customer_id)

    @staticmethod
    def _newer_stored(change: ConsentChangeRecord, changes: list[ConsentChangeRecord]) -> bool:
        """Whether a newer change for the same customer and purpose is stored."""
        return any(
            other.purpose == change.purpose and other.order() > change.order() for other in changes
        )
