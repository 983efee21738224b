"""The Feast-backed feature source: consent first, unknown customers, timeouts and failures."""

from __future__ import annotations

import time

import pytest

from features.views import CUSTOMER_BILLING, CUSTOMER_CONTRACT, CUSTOMER_USAGE
from serving.feature_reader import (
    ACCOUNT_FEATURES,
    CONSENT_FEATURES,
    FAILURE_MEMORY_SECONDS,
    PROFILE_FEATURES,
    READ_WORKERS,
    FeastFeatureSource,
    FeatureStoreUnavailable,
)
from tests.factories.api import SlowStore
from tests.factories.decision import account, consent, profile


def _store(delay: float = 0.0) -> SlowStore:
    return SlowStore({"C0001": {**consent(), **account(), **profile()}}, delay=delay)


def test_consent_is_read_alone_and_first() -> None:
    store = _store()
    source = FeastFeatureSource(store, timeout_ms=1000)
    row = source.read_consent("C0001")
    assert row == consent()
    assert store.asked == [CONSENT_FEATURES]
    assert all(reference.startswith("customer_consent:") for reference in CONSENT_FEATURES)
    source.close()


def test_account_and_profile_read_their_views() -> None:
    store = _store()
    source = FeastFeatureSource(store, timeout_ms=1000)
    assert set(source.read_account("C0001")) == {
        *CUSTOMER_USAGE,
        *CUSTOMER_CONTRACT,
        *CUSTOMER_BILLING,
    }
    assert source.read_profile("C0001") == profile()
    assert store.asked == [ACCOUNT_FEATURES, PROFILE_FEATURES]
    source.close()


def test_account_and_profile_together_are_one_read_with_the_same_values() -> None:
    store = _store()
    source = FeastFeatureSource(store, timeout_ms=1000)
    account_row, profile_row = source.read_account_and_profile("C0001")
    assert store.asked == [[*ACCOUNT_FEATURES, *PROFILE_FEATURES]]
    assert account_row == source.read_account("C0001")
    assert profile_row == profile()
    source.close()


def test_a_customer_the_store_never_saw_is_unknown() -> None:
    source = FeastFeatureSource(_store(), timeout_ms=1000)
    assert source.read_consent("C9999") is None
    source.close()


def test_a_slow_store_times_out_as_unavailable() -> None:
    source = FeastFeatureSource(_store(delay=0.5), timeout_ms=20)
    started = time.perf_counter()
    with pytest.raises(FeatureStoreUnavailable) as unavailable:
        source.read_consent("C0001")
    assert unavailable.value.reason == "timeout"
    assert time.perf_counter() - started < 0.25
    source.close()


def test_a_hanging_store_does_not_pile_up_reads() -> None:
    source = FeastFeatureSource(_store(delay=0.6), timeout_ms=10)
    for _ in range(READ_WORKERS + 4):
        with pytest.raises(FeatureStoreUnavailable):
            source.read_account("C0001")
    started = time.perf_counter()
    with pytest.raises(FeatureStoreUnavailable):
        source.read_consent("C0001")
    assert time.perf_counter() - started < 0.1  # still bounded by the timeout
    source.close()


def test_many_customers_are_read_in_one_read_when_the_store_bounds_its_own() -> None:
    store = SlowStore(
        {
            "C0001": {**consent(), **account(), **profile()},
            "C0002": {**consent(profiling=False), **account(tenure_months=7), **profile()},
        }
    )
    direct = FeastFeatureSource(store, timeout_ms=1000, store_bounds_reads=True)
    asked = ["C0002", "C9999", "C0001"]
    assert direct.read_consents(asked) == [
        direct.read_consent("C0002"),
        None,
        direct.read_consent("C0001"),
    ]
    assert direct.read_accounts(["C0002", "C0001"])[0]["tenure_months"] == 7
    store.asked.clear()
    direct.read_accounts_and_profiles(["C0001", "C0002"])
    assert store.asked == [[*ACCOUNT_FEATURES, *PROFILE_FEATURES]]  # one read for both
    direct.close()


def test_a_hanging_store_fails_a_read_of_many_within_one_timeout() -> None:
    """Behind a watchdog each customer is read within the request's timeout: the first that
    times out ends the read of many, so a batch waits one timeout, not one per customer."""
    source = FeastFeatureSource(_store(delay=0.5), timeout_ms=20)
    started = time.perf_counter()
    with pytest.raises(FeatureStoreUnavailable) as unavailable:
        source.read_consents(["C0001"] * 20)
    assert unavailable.value.reason == "timeout"
    assert time.perf_counter() - started < 0.25
    assert source.recently_failed
    source.close()


def test_a_failing_store_is_unavailable_naming_the_error() -> None:
    store = _store()
    store.error = ConnectionError("redis gone")
    source = FeastFeatureSource(store, timeout_ms=1000)
    with pytest.raises(FeatureStoreUnavailable) as unavailable:
        source.read_consent("C0001")
    assert unavailable.value.reason == "ConnectionError"
    source.close()


class _TimingOutStore:
    """A store whose client gives up on its own, as Redis does with a socket timeout."""

    def get_online_features(self, features: list[str], entity_rows: list[dict[str, str]]) -> None:
        raise TimeoutError("Timeout reading from socket")


def test_a_store_that_bounds_its_own_reads_is_read_in_the_callers_thread() -> None:
    import threading

    seen: list[str] = []

    class _Recording(SlowStore):
        def get_online_features(self, features, entity_rows):  # type: ignore[no-untyped-def]
            seen.append(threading.current_thread().name)
            return super().get_online_features(features, entity_rows)

    store = _Recording({"C0001": {**consent(), **account(), **profile()}}, delay=0.0)
    source = FeastFeatureSource(store, timeout_ms=1000, store_bounds_reads=True)
    assert source.read_consent("C0001") == consent()
    assert seen == [threading.current_thread().name]
    source.close()


def test_the_stores_own_timeout_is_reported_as_a_timeout() -> None:
    source = FeastFeatureSource(_TimingOutStore(), timeout_ms=10, store_bounds_reads=True)
    with pytest.raises(FeatureStoreUnavailable) as unavailable:
        source.read_consent("C0001")
    assert unavailable.value.reason == "timeout"
    source.close()


def test_a_failed_read_is_remembered_for_a_while() -> None:
    now = [100.0]
    source = FeastFeatureSource(
        _TimingOutStore(), timeout_ms=10, store_bounds_reads=True, clock=lambda: now[0]
    )
    assert not source.recently_failed
    with pytest.raises(FeatureStoreUnavailable):
        source.read_consent("C0001")
    assert source.recently_failed
    now[0] += FAILURE_MEMORY_SECONDS - 0.5
    assert source.recently_failed
    now[0] += 1.0
    assert not source.recently_failed
    source.close()
