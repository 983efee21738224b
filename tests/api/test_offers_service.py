"""OffersService without HTTP: replay, the arm, challenger retries, fallbacks, the log record."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.catalog import load_catalog
from serving.decision.arbitration import DEFAULT_OBJECTIVE, Objective
from serving.decision.engine import Decision
from serving.decision.inputs import DecisionRequest, ExperimentAssignment, UnknownCustomerError
from serving.decision_log import DecisionLog, DecisionRecord
from serving.decision_log.records import ExperimentSpec, Variant
from serving.experiments import Experiments, assign_variant
from serving.feature_reader import OnlineFeatureSource, OpenFeatureStore
from serving.metrics import ApiMetrics
from serving.offers import (
    CHAMPION,
    Arm,
    ChallengerRetries,
    InvoiceAnswer,
    InvoiceCustomerConflict,
    OffersService,
    api_decision_id,
)
from serving.scoring_model import ModelHolder, ModelLoadFailed
from tests.factories.api import CATALOG, FakeFeatures, FakeRegistry, counting_writes, ranker

DAY = dt.date(2026, 11, 30)


def invoice(number: int = 1, customer: str = "C0001", **overrides: Any) -> DecisionRequest:
    return replace(DecisionRequest(f"INV-{number}", customer, DAY, "sv", 3), **overrides)


def render(decision: Decision, decision_id: str, *, dry_run: bool = False) -> str:
    """A plain answer: the service leaves the answer's shape to its caller."""
    return json.dumps(
        {
            "decision_id": decision_id,
            "policy": decision.policy,
            "model_version": decision.model_version,
            "degraded": decision.degraded,
            "offers": [offer.offer_id for offer in decision.offers],
            "dry_run": dry_run,
        }
    )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DecisionLog]:
    opened = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}")
    yield opened
    opened.close()


def started(registry: FakeRegistry | None = None) -> ModelHolder:
    holder = ModelHolder((registry or FakeRegistry()).loader())
    holder.start()
    return holder


def service(
    log: DecisionLog,
    *,
    models: ModelHolder | None = None,
    features: OnlineFeatureSource | None = None,
    store: OpenFeatureStore | None = None,
    objective: Objective = DEFAULT_OBJECTIVE,
    counted: bool = True,
    decision_ids: Callable[[DecisionRequest], str] = api_decision_id,
) -> OffersService:
    return OffersService(
        catalog=load_catalog(CATALOG),
        models=models or started(),
        log=log,
        experiments=Experiments(log),
        feature_store=store or OpenFeatureStore(FakeFeatures() if features is None else features),
        metrics=ApiMetrics() if counted else None,
        render=render,
        decline_cap_invoices=3,
        objective=objective,
        decision_ids=decision_ids,
    )


def decisions_counted(offers: OffersService, policy: str) -> float | None:
    assert offers.metrics is not None
    return offers.metrics.registry.get_sample_value("offers_decisions_total", {"policy": policy})


def test_a_new_invoice_is_decided_recorded_and_answered_as_rendered(log: DecisionLog) -> None:
    offers = service(log)
    answer = offers.answer(invoice())
    body = json.loads(answer)
    assert (body["policy"], body["model_version"], body["degraded"]) == (
        "model",
        "offer-ranker/1",
        None,
    )
    assert body["offers"]
    stored = log.find("INV-1")
    assert stored is not None
    assert (stored.decision_id, stored.customer_id) == (body["decision_id"], "C0001")
    assert stored.response_json == answer
    assert decisions_counted(offers, "model") == 1.0


def test_a_service_without_metrics_records_the_same_decisions_without_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The invoice run's service: its summary counts, so a million decisions leave no counters
    and no log line each, and are decided and stored as the API's."""
    answers = {}
    for counted in (True, False):
        log = DecisionLog(f"sqlite:///{tmp_path / f'offers-{counted}.db'}")
        offers = service(log, counted=counted, decision_ids=lambda asked: f"D-{asked.invoice_id}")
        caplog.clear()
        with caplog.at_level("INFO", logger="serving"):
            outcomes = offers.answer_many([invoice(1), invoice(2, "C0002")])
        lines = [record for record in caplog.records if record.getMessage() == "decision"]
        assert len(lines) == (2 if counted else 0)
        written = [outcome for outcome in outcomes if isinstance(outcome, InvoiceAnswer)]
        assert [outcome.written for outcome in written] == [True, True]
        stored = log.find("INV-2")
        assert stored is not None
        answers[counted] = [outcome.answer_json for outcome in written], stored.response_json
        log.close()
    assert answers[False] == answers[True]


def test_the_service_decides_by_the_objective_it_was_given(log: DecisionLog) -> None:
    assert json.loads(service(log).answer(invoice()))["offers"]
    # Nothing is likely enough at a floor of 99 % acceptance: the invoice shows no offer.
    picky = service(log, objective=Objective(min_acceptance=0.99))
    body = json.loads(picky.answer(invoice(2)))
    assert (body["policy"], body["offers"]) == ("model", [])


def test_a_stored_decision_is_replayed_without_deciding_again(log: DecisionLog) -> None:
    features = FakeFeatures()
    offers = service(log, features=features)
    first = offers.answer(invoice())
    reads = features.reads
    again = offers.answer(invoice(locale="en", max_offers=1))
    assert again == first
    assert features.reads == reads
    assert decisions_counted(offers, "model") == 1.0  # a replay is not a decision


def test_a_decision_another_worker_stored_is_the_answer(log: DecisionLog) -> None:
    features = FakeFeatures()
    log.record(
        DecisionRecord(
            decision_id="D-1",
            invoice_id="INV-1",
            customer_id="C0001",
            invoice_date=DAY,
            created_at=dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
            policy="rules",
            model_version=None,
            experiment_key=None,
            experiment_variant=None,
            degraded=None,
            consent={"marketing": True},
            response_json='{"decision_id": "D-1"}',
            log={},
            offers=(),
        )
    )
    assert service(log, features=features).answer(invoice()) == '{"decision_id": "D-1"}'
    assert features.reads == 0


def test_an_invoice_decided_for_another_customer_is_a_conflict(log: DecisionLog) -> None:
    offers = service(log)
    offers.answer(invoice())
    with pytest.raises(InvoiceCustomerConflict) as raised:
        offers.answer(invoice(customer="C0002"))
    assert raised.value.invoice_id == "INV-1"
    assert str(raised.value) == "invoice INV-1 was already decided for another customer"


def stored_elsewhere(invoice_id: str, customer_id: str) -> DecisionRecord:
    """A decision another worker stored for the invoice."""
    return DecisionRecord(
        decision_id=f"D-{invoice_id}",
        invoice_id=invoice_id,
        customer_id=customer_id,
        invoice_date=DAY,
        created_at=dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
        policy="rules",
        model_version=None,
        experiment_key=None,
        experiment_variant=None,
        degraded=None,
        consent={"marketing": True},
        response_json=f'{{"decision_id": "D-{invoice_id}"}}',
        log={},
        offers=(),
    )


def test_many_invoices_are_answered_in_order_with_one_write(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    offers = service(log)
    offers.answer(invoice(1))
    writes = counting_writes(log, monkeypatch)
    answers = offers.answer_many(
        [
            invoice(2),
            invoice(1),
            invoice(3, customer="C9999"),
            invoice(4, customer="C0002"),
            invoice(1, customer="C0002"),
            invoice(2, locale="en"),
        ]
    )
    assert writes == [2]  # INV-2 and INV-4, together
    assert isinstance(answers[2], UnknownCustomerError)
    assert isinstance(answers[4], InvoiceCustomerConflict)
    stored = log.find_many(["INV-1", "INV-2", "INV-4"])
    # Written by this call: INV-2 (asked twice, written once) and INV-4; INV-1 replayed.
    assert answers[1] == InvoiceAnswer(stored["INV-1"].response_json, stored=True)
    assert answers[0] == InvoiceAnswer(stored["INV-2"].response_json, stored=True, written=True)
    assert answers[5] == InvoiceAnswer(stored["INV-2"].response_json, stored=True)
    assert answers[3] == InvoiceAnswer(stored["INV-4"].response_json, stored=True, written=True)
    assert decisions_counted(offers, "model") == 3.0


def test_batches_against_a_local_log_are_decided_one_at_a_time(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batches sent at once: each is decided whole before the next starts, and each is
    answered with its own invoices' decisions."""
    offers = service(log)
    decide = offers.answer_many
    deciding: list[int] = []
    most_at_once = 0

    def watched(requests: Any, arms: Any = None, dry_runs: Any = None) -> Any:
        nonlocal most_at_once
        deciding.append(1)
        most_at_once = max(most_at_once, len(deciding))
        try:
            time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
            return decide(requests, arms, dry_runs)
        finally:
            deciding.pop()

    monkeypatch.setattr(offers, "answer_many", watched)
    barrier = threading.Barrier(3)
    answered: dict[int, list[Any]] = {}

    def send(batch: int) -> None:
        requests = [invoice(batch * 10 + number, customer=f"C000{batch}") for number in (1, 2)]
        barrier.wait()
        answered[batch] = offers.answer_batch(requests, [False, False])

    threads = [threading.Thread(target=send, args=(batch,)) for batch in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_at_once == 1
    stored = log.find_many([f"INV-{batch * 10 + n}" for batch in (1, 2, 3) for n in (1, 2)])
    for batch, answers in answered.items():
        assert answers == [
            InvoiceAnswer(stored[f"INV-{batch * 10 + n}"].response_json, stored=True, written=True)
            for n in (1, 2)
        ]
    assert len(answered) == 3


def test_invoices_another_worker_stored_meanwhile_answer_with_its_decisions(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the look-up and the write, another worker stores two of the invoices: one for
    the same customer (its answer is replayed), one for another customer (a conflict)."""
    offers = service(log)
    write = log.record_many

    def raced(pending: Any) -> Any:
        log.record(stored_elsewhere("INV-1", "C0001"))
        log.record(stored_elsewhere("INV-2", "C0009"))
        return write(pending)

    monkeypatch.setattr(log, "record_many", raced)
    answers = offers.answer_many([invoice(1), invoice(2), invoice(3)])
    assert answers[0] == InvoiceAnswer('{"decision_id": "D-INV-1"}', stored=True)
    assert isinstance(answers[1], InvoiceCustomerConflict)
    third = log.find_many(["INV-3"])["INV-3"].response_json
    assert answers[2] == InvoiceAnswer(third, stored=True, written=True)
    assert decisions_counted(offers, "model") == 1.0


def test_an_unknown_customer_raises_and_nothing_is_recorded(log: DecisionLog) -> None:
    with pytest.raises(UnknownCustomerError):
        service(log).answer(invoice(customer="C9999"))
    assert log.find("INV-1") is None


def test_a_scorer_that_fails_gives_a_fallback_decided_by_rules(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = started()
    offers = service(log, models=models)

    def broken(rows: Any) -> Any:
        raise RuntimeError("lightgbm could not allocate")

    monkeypatch.setattr(models.current.scorer, "acceptance", broken)
    body = json.loads(offers.answer(invoice()))
    assert (body["policy"], body["model_version"], body["degraded"]) == (
        "fallback",
        None,
        "model_error",
    )
    assert body["offers"]  # the rules still chose
    assert log.find("INV-1") is not None
    degraded = offers.metrics.registry.get_sample_value(
        "offers_degraded_answers_total", {"reason": "model_error"}
    )
    assert degraded == 1.0


def test_a_champion_that_failed_to_load_gives_a_fallback_decided_by_rules(
    log: DecisionLog,
) -> None:
    registry = FakeRegistry()
    registry.champions["offer-ranker"] = ModelLoadFailed("registry down")
    body = json.loads(service(log, models=started(registry)).answer(invoice()))
    assert (body["policy"], body["model_version"], body["degraded"]) == (
        "fallback",
        None,
        "model_unavailable",
    )
    assert body["offers"]


def test_a_failing_feature_store_gives_a_degraded_fallback(log: DecisionLog) -> None:
    features = FakeFeatures()
    features.fail = "timeout"
    body = json.loads(service(log, features=features).answer(invoice()))
    assert (body["policy"], body["degraded"], body["offers"]) == (
        "fallback",
        "feature_store_unavailable",
        [],
    )
    assert log.find("INV-1") is not None


def test_simultaneous_retries_of_a_degraded_invoice_answer_one_decision(
    log: DecisionLog,
) -> None:
    features = FakeFeatures()
    offers = service(log, features=features)
    features.fail = "timeout"
    degraded = json.loads(offers.answer(invoice()))
    features.fail = None
    barrier = threading.Barrier(6)
    answers: list[str] = []
    failures: list[BaseException] = []

    def retry() -> None:
        barrier.wait()
        try:
            answers.append(offers.answer(invoice()))
        except BaseException as error:  # the test fails below, naming it
            failures.append(error)

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(answers) == 6 and len(set(answers)) == 1
    fresh = json.loads(answers[0])
    assert (fresh["policy"], fresh["degraded"]) == ("model", None) and fresh["offers"]
    stored = log.find("INV-1")
    assert stored is not None and stored.decision_id == fresh["decision_id"]
    assert degraded["decision_id"] != fresh["decision_id"]
    # Each answer given was counted once: the degraded one, and the one decision that was stored.
    assert decisions_counted(offers, "fallback") == 1.0
    assert decisions_counted(offers, "model") == 1.0


def test_a_retry_of_a_degraded_invoice_for_another_customer_is_a_conflict(
    log: DecisionLog,
) -> None:
    features = FakeFeatures()
    features.fail = "timeout"
    offers = service(log, features=features)
    offers.answer(invoice())
    features.fail = None
    with pytest.raises(InvoiceCustomerConflict):
        offers.answer(invoice(customer="C0002"))


def test_a_store_that_is_not_open_is_reopened_for_a_later_invoice(log: DecisionLog) -> None:
    opened: list[FakeFeatures] = []
    store = OpenFeatureStore(None, lambda: opened[0] if opened else None)
    offers = service(log, store=store)
    down = json.loads(offers.answer(invoice(1)))
    opened.append(FakeFeatures())
    back = json.loads(offers.answer(invoice(2)))
    assert (down["policy"], down["degraded"]) == ("fallback", "feature_store_unavailable")
    assert (back["policy"], back["degraded"]) == ("model", None)
    assert store.source is opened[0]


def test_the_arm_is_the_running_experiments_variant(log: DecisionLog) -> None:
    offers = service(log)
    assert offers.arm("C0001", DAY) == CHAMPION
    spec = ExperimentSpec(
        key="ranker-vs-rules",
        description="",
        variants=(Variant("treatment", 0.5, "model"), Variant("control", 0.5, "holdout")),
        start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        end=dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    )
    offers.experiments.create(spec)
    for customer in ("C0001", "C0002", "C0003"):
        variant = assign_variant("ranker-vs-rules", customer, spec.variants)
        assert offers.arm(customer, DAY) == Arm(
            variant.policy, ExperimentAssignment("ranker-vs-rules", variant.name)
        )
    assert offers.arm("C0001", dt.date(2026, 10, 31)) == CHAMPION


def test_challenger_retries_live_on_each_service(log: DecisionLog) -> None:
    registry = FakeRegistry()  # version 9 is not in the registry
    models = started(registry)
    first, second = service(log, models=models), service(log, models=models)
    challenger = Arm("model:9", None)
    loads = registry.loads
    answers = [first.answer(invoice(1), challenger), first.answer(invoice(2), challenger)]
    assert registry.loads == loads + 1  # one try for two invoices
    answers.append(second.answer(invoice(3), challenger))
    assert registry.loads == loads + 2  # the other service keeps its own tries
    assert all(
        (body["model_version"], body["degraded"]) == ("offer-ranker/1", "challenger_unavailable")
        for body in map(json.loads, answers)
    )
    registry.versions[("offer-ranker", "9")] = ranker("9")
    first.challenger_retries.interval_seconds = 0.0
    later = json.loads(first.answer(invoice(4), challenger))
    assert (later["model_version"], later["degraded"]) == ("offer-ranker/9", None)


def test_challenger_retries_allow_one_try_per_policy_per_interval() -> None:
    now = [100.0]
    retries = ChallengerRetries(interval_seconds=10.0, clock=lambda: now[0])
    assert retries.may_try("model:9")
    assert not retries.may_try("model:9")
    assert retries.may_try("model:8")  # each policy on its own
    now[0] = 109.9
    assert not retries.may_try("model:9")
    now[0] = 110.0
    assert retries.may_try("model:9")
    assert not retries.may_try("model:9")


class BoundedFeatures(FakeFeatures):
    def __init__(self, *, bounds_reads: bool, recently_failed: bool) -> None:
        super().__init__()
        self.bounds_reads = bounds_reads
        self.recently_failed = recently_failed


@pytest.mark.parametrize(
    ("bounds_reads", "recently_failed", "policy", "without_waiting"),
    [
        (True, False, "model", True),
        (True, False, "rules", True),
        (False, False, "model", False),
        (True, True, "model", False),
        (True, False, "model:9", False),  # a challenger to load
    ],
)
def test_an_arm_answers_without_waiting_only_when_nothing_on_its_path_can_wait(
    log: DecisionLog, bounds_reads: bool, recently_failed: bool, policy: str, without_waiting: bool
) -> None:
    features = BoundedFeatures(bounds_reads=bounds_reads, recently_failed=recently_failed)
    offers = service(log, features=features)
    assert offers.answers_without_waiting(Arm(policy, None)) is without_waiting
