"""The decision engine's feature source over the Feast online store, guarded by a timeout.

Consent is read first and alone: the consent gate decides what else may be read. A customer the
store has never seen reads back as all None and is reported as unknown. A read that fails or takes
longer than ``OFFERS_FEATURE_TIMEOUT_MS`` raises :class:`FeatureStoreUnavailable`, which the API
turns into a degraded answer instead of an error. :class:`OnlineFeatureSource` names what the API
asks of an open store, and :class:`OpenFeatureStore` holds the one it has open. The consent path
(``POST /v1/consents``) reads and writes whole consent rows through the same source, bounded by
the same timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, TypeVar

from core.columns import CUSTOMER_KEY, OFFER_KEY
from core.settings import Settings
from features.consent_rows import ConsentRowWrite, OnlineConsentRow, OnlineConsentRows
from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONSENT,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
)
from serving.decision.inputs import FeatureSource

logger = logging.getLogger("serving.features")

# Enough for the reads of the threads serving requests; a read stuck past its timeout keeps its
# worker, so a hanging store exhausts this pool and further reads time out instead of piling up.
READ_WORKERS = 8
FAILURE_MEMORY_SECONDS = 10.0

Answer = TypeVar("Answer")


# The key readiness reads. No request can name it (the API's ids are letters, digits and ._-,
# never '#'); the read still
# goes through the store's table, connection and lock exactly as a request's read does.
READINESS_PROBE_KEY = "# readiness #"


class FeatureStoreUnavailable(Exception):
    """The online store failed or did not answer within the timeout."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OnlineStore(Protocol):
    def get_online_features(
        self, features: list[str], entity_rows: list[dict[str, Any]]
    ) -> Any: ...


class OnlineFeatureSource(FeatureSource, Protocol):
    """A feature source over an online store, as the API holds it open between requests."""

    @property
    def bounds_reads(self) -> bool:
        """True when a read gives up by itself within the timeout, in the caller's thread."""
        ...

    @property
    def recently_failed(self) -> bool:
        """True for a few seconds after a read failed or timed out."""
        ...

    def probe(self) -> None:
        """One bounded read, as a request reads; raises ``FeatureStoreUnavailable``."""
        ...

    def read_consent_row(self, customer_id: str) -> OnlineConsentRow | None:
        """The customer's whole consent row and its event time; None for an unknown customer.
        Bounded like a read; raises ``FeatureStoreUnavailable``."""
        ...

    def write_consent_row(self, row: ConsentRowWrite) -> None:
        """Write a customer's whole consent row, as materialize writes it. Bounded like a read;
        raises ``FeatureStoreUnavailable``."""
        ...

    def close(self) -> None:
        """Release the store's connections and threads."""
        ...


class OpenFeatureStore:
    """The API's open feature source: None while the store is down, reopened when asked for.

    ``reopen`` rate-limits itself and answers None while the store stays down.
    """

    def __init__(
        self,
        source: OnlineFeatureSource | None = None,
        reopen: Callable[[], OnlineFeatureSource | None] | None = None,
        problem: Callable[[], str | None] | None = None,
    ) -> None:
        """``problem``: why the store stays closed when reopening will not help, or None."""
        self.source = source
        self._reopen = reopen
        self._problem = problem

    @property
    def problem(self) -> str | None:
        """Why the store is closed, when reopening alone will not mend it; None otherwise."""
        return None if self._problem is None or self.source is not None else self._problem()

    def current(self) -> OnlineFeatureSource | None:
        """The open source; a closed store is reopened here, which blocks: never on the loop."""
        if self.source is None and self._reopen is not None:
            opened = self._reopen()
            if opened is not None:
                self.source = opened
        return self.source

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def _refs(view: str, names: Sequence[str]) -> list[str]:
    return [f"{view}:{name}" for name in names]


CONSENT_FEATURES = _refs("customer_consent", list(CUSTOMER_CONSENT))
ACCOUNT_FEATURES = [
    *_refs("customer_usage", list(CUSTOMER_USAGE)),
    *_refs("customer_contract", list(CUSTOMER_CONTRACT)),
    *_refs("customer_billing", list(CUSTOMER_BILLING)),
]
PROFILE_FEATURES = _refs("customer_profile", list(CUSTOMER_PROFILE))
ACCOUNT_AND_PROFILE_FEATURES = [*ACCOUNT_FEATURES, *PROFILE_FEATURES]
ACCOUNT_NAMES = [ref.partition(":")[2] for ref in ACCOUNT_FEATURES]
PROFILE_NAMES = list(CUSTOMER_PROFILE)
# What readiness reads of a catalog offer: present in every materialized store.
OFFER_PROBE_FEATURES = ["offer_attributes:offer_kind_code"]


class FeastFeatureSource:
    """Reads one customer's features from the online store, one feature group at a time."""

    def __init__(
        self,
        store: OnlineStore,
        *,
        timeout_ms: float,
        store_bounds_reads: bool = False,
        clock: Callable[[], float] = time.monotonic,
        consent_rows: OnlineConsentRows | None = None,
        known_offer_id: str | None = None,
    ) -> None:
        """``store_bounds_reads``: the store gives up on its own after the timeout, so reads run
        in the request's thread; otherwise a watchdog pool bounds them (a thread hop per read
        costs about 0.1 ms at p50 and tens of ms at p99 on two busy cores). ``consent_rows``:
        the same store's whole consent rows, for the consent path; without it that path answers
        as if the store were down. ``known_offer_id``: an offer of the catalog, whose attributes
        every materialized store holds; readiness reads it, so a store that answers but holds
        nothing (a Redis restarted without its data) is not ready."""
        self._store = store
        self._known_offer_id = known_offer_id
        self._consent_rows = consent_rows
        self._timeout = timeout_ms / 1000.0
        self._direct = store_bounds_reads
        self._pool = ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="features")
        self._clock = clock
        self._failed_at: float | None = None

    @property
    def bounds_reads(self) -> bool:
        """True when a read gives up by itself within the timeout, in the caller's thread."""
        return self._direct

    @property
    def recently_failed(self) -> bool:
        """True for ``FAILURE_MEMORY_SECONDS`` after a read failed or timed out.

        A store that hangs makes every read wait its full timeout; the API then decides in the
        thread pool, where those waits overlap, instead of one after another on the event loop.
        """
        failed_at = self._failed_at
        return failed_at is not None and self._clock() - failed_at < FAILURE_MEMORY_SECONDS

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        """Consent features, or None for a customer the store has never seen."""
        row = self._read(CONSENT_FEATURES, customer_id)
        if all(value is None for value in row.values()):
            return None
        return row

    def read_account(self, customer_id: str) -> dict[str, Any]:
        """Usage, contract and billing features."""
        return self._read(ACCOUNT_FEATURES, customer_id)

    def read_profile(self, customer_id: str) -> dict[str, Any]:
        """Profile features; read only with profiling consent."""
        return self._read(PROFILE_FEATURES, customer_id)

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Account and profile features in one read of the store; only with profiling consent."""
        row = self._read(ACCOUNT_AND_PROFILE_FEATURES, customer_id)
        return {name: row[name] for name in ACCOUNT_NAMES}, {
            name: row[name] for name in PROFILE_NAMES
        }

    def read_consents(self, customer_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """:meth:`read_consent` of each customer, in order, in one bounded read of the store."""
        return [
            None if all(value is None for value in row.values()) else row
            for row in self._read_many(CONSENT_FEATURES, customer_ids)
        ]

    def read_accounts(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """:meth:`read_account` of each customer, in order, in one bounded read of the store."""
        return self._read_many(ACCOUNT_FEATURES, customer_ids)

    def read_accounts_and_profiles(
        self, customer_ids: Sequence[str]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """:meth:`read_account_and_profile` of each customer, in order, in one bounded read;
        only with each one's profiling consent."""
        return [
            (
                {name: row[name] for name in ACCOUNT_NAMES},
                {name: row[name] for name in PROFILE_NAMES},
            )
            for row in self._read_many(ACCOUNT_AND_PROFILE_FEATURES, customer_ids)
        ]

    def probe(self) -> None:
        """One bounded read of a key, as a request reads, for readiness; raises
        ``FeatureStoreUnavailable`` when the store does not answer within the timeout, or
        (``empty``) when it does not hold the known offer's attributes."""
        if self._known_offer_id is None:
            self._read(CONSENT_FEATURES, READINESS_PROBE_KEY)
            return
        row = self._bounded(
            self._fetch_entity, OFFER_PROBE_FEATURES, OFFER_KEY, self._known_offer_id
        )
        if all(value is None for value in row.values()):
            raise FeatureStoreUnavailable("empty: run `offers features materialize`")

    def read_consent_row(self, customer_id: str) -> OnlineConsentRow | None:
        """The customer's whole consent row and its event time; None for an unknown customer."""
        rows = self._bounded(self._consent_store().read, [customer_id])
        return rows.get(customer_id)

    def write_consent_row(self, row: ConsentRowWrite) -> None:
        """Write a customer's whole consent row, bounded by the timeout like a read."""
        self._bounded(self._consent_store().write, [row])

    def _consent_store(self) -> OnlineConsentRows:
        if self._consent_rows is None:
            raise FeatureStoreUnavailable("no_consent_rows")
        return self._consent_rows

    def warm_up(self) -> None:
        """Open the store's connections in every reader before the first request needs them."""
        if self._direct:
            self._fetch(CONSENT_FEATURES, "__warm_up__")
            return
        for future in [
            self._pool.submit(self._fetch, CONSENT_FEATURES, "__warm_up__")
            for _ in range(READ_WORKERS)
        ]:
            future.result(timeout=30.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _read(self, features: list[str], customer_id: str) -> dict[str, Any]:
        return self._bounded(self._fetch, features, customer_id)

    def _read_many(self, features: list[str], customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not self._direct:
            # A watchdog bounds each read by the request's timeout, which a read of many
            # customers may rightly exceed: read them one by one.
            return [self._read(features, customer_id) for customer_id in customer_ids]
        return self._bounded(self._fetch_many, features, customer_ids)

    def _fetch_many(self, features: list[str], customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not customer_ids:
            return []
        response = self._store.get_online_features(
            features=features, entity_rows=[{CUSTOMER_KEY: value} for value in customer_ids]
        ).to_dict()
        columns = [(name, values) for name, values in response.items() if name != CUSTOMER_KEY]
        return [
            {name: values[position] for name, values in columns}
            for position in range(len(customer_ids))
        ]

    def _bounded(self, call: Callable[..., Answer], *arguments: Any) -> Answer:
        try:
            return self._bounded_call(call, *arguments)
        except FeatureStoreUnavailable:
            self._failed_at = self._clock()
            raise

    def _bounded_call(self, call: Callable[..., Answer], *arguments: Any) -> Answer:
        if self._direct:
            try:
                return call(*arguments)
            except FeatureStoreUnavailable:
                raise
            except Exception as error:
                reason = "timeout" if "timeout" in type(error).__name__.lower() else None
                logger.warning("online store read failed", extra={"error": type(error).__name__})
                raise FeatureStoreUnavailable(reason or type(error).__name__) from error
        future = self._pool.submit(call, *arguments)
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout as error:
            future.cancel()
            raise FeatureStoreUnavailable("timeout") from error
        except FeatureStoreUnavailable:
            raise
        except Exception as error:
            logger.warning("online store read failed", extra={"error": type(error).__name__})
            raise FeatureStoreUnavailable(type(error).__name__) from error

    def _fetch(self, features: list[str], customer_id: str) -> dict[str, Any]:
        return self._fetch_entity(features, CUSTOMER_KEY, customer_id)

    def _fetch_entity(self, features: list[str], key: str, value: str) -> dict[str, Any]:
        response = self._store.get_online_features(
            features=features, entity_rows=[{key: value}]
        ).to_dict()
        return {name: values[0] for name, values in response.items() if name != key}


def open_feast_source(settings: Settings, project: str | None = None) -> FeastFeatureSource:
    """The Feast store of ``settings`` (its default project unless ``project``), opened and
    warmed up."""
    from features.online import OnlineFeatures
    from features.store import PROJECT, open_store

    store = open_store(settings, project or PROJECT)
    online = OnlineFeatures(store)
    # Every read's features are in the store's registry, or the store is not opened: a registry
    # an earlier release applied would otherwise fail each decision's read, while ready.
    for refs in (
        CONSENT_FEATURES,
        ACCOUNT_FEATURES,
        PROFILE_FEATURES,
        ACCOUNT_AND_PROFILE_FEATURES,
    ):
        online.reader(refs)
    timeout_seconds = settings.feature_timeout_ms / 1000.0
    bounded = online.bound_reads(timeout_seconds)
    from core.catalog import load_catalog

    offers = load_catalog(settings.catalog).offers
    source = FeastFeatureSource(
        online,
        timeout_ms=settings.feature_timeout_ms,
        store_bounds_reads=bounded,
        consent_rows=OnlineConsentRows(store, settings, timeout_seconds=timeout_seconds),
        known_offer_id=offers[0].offer_id if offers else None,
    )
    source.warm_up()
    return source
