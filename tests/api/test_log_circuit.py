"""The decision log's deadline and circuit breaker: a database that stops answering gives 503s
with Retry-After, refused at once while the circuit is open, and full answers once it answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
import sqlalchemy as sa

from serving.decision_log.circuit import DecisionLogUnavailable, LogCircuit
from tests.factories.api import FakeFeatures, make_app, offers_body, running
from tests.factories.api import auth as auth_header
from tests.faults.services import BlackHoleProxy, wait_for

RENDERER = auth_header("renderer")
BATCH = "/v1/offers/batch"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def circuit(clock: Clock) -> Iterator[LogCircuit]:
    opened = LogCircuit(deadline_s=0.05, cool_off_s=5.0, threads=4, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def hang() -> Iterator[threading.Event]:
    """Set to let the calls that hang return."""
    released = threading.Event()
    yield released
    released.set()


def unreachable() -> None:
    raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))


def test_a_call_past_the_deadline_is_unavailable_and_retried_after_a_second(
    circuit: LogCircuit, hang: threading.Event
) -> None:
    with pytest.raises(DecisionLogUnavailable) as raised:
        circuit.call(hang.wait)
    assert raised.value.retry_after_s == 1
    assert "did not answer within 0.05 s" in str(raised.value)
    assert not circuit.is_open  # one failure does not open it
    assert circuit.call(lambda: "answered") == "answered"


def test_three_failures_in_a_row_open_the_circuit_and_calls_are_refused_without_running(
    circuit: LogCircuit, clock: Clock, hang: threading.Event
) -> None:
    for failure in (lambda: circuit.call(hang.wait), lambda: circuit.call(unreachable)):
        with pytest.raises(sa.exc.SQLAlchemyError):
            failure()
    assert not circuit.is_open
    with pytest.raises(sa.exc.OperationalError):
        circuit.call(unreachable)
    assert circuit.is_open

    ran: list[str] = []
    clock.now += 1.2
    with pytest.raises(DecisionLogUnavailable) as raised:
        circuit.call(ran.append, "refused")
    assert ran == []
    assert raised.value.retry_after_s == 4  # what is left of the 5 s cool-off, rounded up


def test_after_the_cool_off_one_probe_closes_the_circuit_or_opens_it_again(
    circuit: LogCircuit, clock: Clock
) -> None:
    for _ in range(3):
        with pytest.raises(sa.exc.OperationalError):
            circuit.call(unreachable)
    clock.now += 5.0
    with pytest.raises(sa.exc.OperationalError):  # the probe ran, and failed
        circuit.call(unreachable)
    with pytest.raises(DecisionLogUnavailable) as raised:
        circuit.call(lambda: "refused")
    assert raised.value.retry_after_s == 5  # a whole cool-off again

    clock.now += 5.0
    assert circuit.call(lambda: "probe") == "probe"
    assert not circuit.is_open
    assert circuit.call(lambda: "next") == "next"


def test_a_refusal_by_the_database_is_an_answer_not_a_failure(circuit: LogCircuit) -> None:
    def clash() -> None:
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    for _ in range(5):
        with pytest.raises(sa.exc.IntegrityError):
            circuit.call(clash)
    assert not circuit.is_open


def test_a_call_made_within_a_call_runs_in_place(circuit: LogCircuit) -> None:
    def outer() -> str:
        return circuit.call(threading.current_thread) is threading.current_thread() and "same"

    assert circuit.call(outer) == "same"


# The API in front of a PostgreSQL log that stops answering ----------------------------------


@pytest.mark.integration
@pytest.mark.postgres
def test_a_black_holed_postgres_log_is_503_with_retry_after_then_answers_again(
    tmp_path: Path, postgres_url: str, pg_schema: str, features: FakeFeatures
) -> None:
    """The log behind a proxy that stops forwarding: each offers request is a 503 with
    Retry-After (refused at once once the circuit opens), and a 200 once the proxy forwards."""
    upstream = urlparse(postgres_url)
    proxy = BlackHoleProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432))
    user = quote(upstream.username or "postgres")
    password = f":{quote(upstream.password)}" if upstream.password else ""
    url = (
        f"postgresql://{user}{password}@127.0.0.1:{proxy.port}{upstream.path}"
        f"?options=-csearch_path%3D{pg_schema}"
    )
    app = make_app(
        tmp_path,
        features=features,
        database_url=url,
        database_timeout_ms=300,
        database_cool_off_seconds=1.0,
    )
    try:
        with running(app) as client:
            first = client.post("/v1/offers", json=offers_body(invoice_id="BH-0"), headers=RENDERER)
            assert first.status_code == 200
            proxy.black_hole()
            # The batch first, while the circuit is still closed: its look-up of many invoices
            # ends at the deadline of its own accord. The preview's look-up, then single offers.
            two = [offers_body(invoice_id="BH-1"), offers_body(invoice_id="BH-2")]
            preview = "/preview/invoices/BH-3"
            answers: list[Any] = [
                client.post(BATCH, json={"invoices": two}, headers=RENDERER),
                client.get(preview, params={"customer_id": "C0001"}, headers=RENDERER),
                *(
                    client.post(
                        "/v1/offers", json=offers_body(invoice_id=f"BH-{n}"), headers=RENDERER
                    )
                    for n in range(4, 7)
                ),
            ]
            assert [a.status_code for a in answers] == [503] * 5
            assert all(a.headers["content-type"] == "application/problem+json" for a in answers)
            assert all(a.json()["type"].endswith("decision-log-unavailable") for a in answers)
            assert all(int(a.headers["retry-after"]) >= 1 for a in answers)
            assert client.app.state.services.log.circuit.is_open
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert client.get("/health/live").status_code == 200

            proxy.forward()

            def answered() -> bool:
                again = client.post(
                    "/v1/offers", json=offers_body(invoice_id="BH-9"), headers=RENDERER
                )
                return again.status_code == 200

            wait_for(answered, 30.0, "a 200 once the proxy forwards again", every=0.2)
            replay = client.post(
                "/v1/offers", json=offers_body(invoice_id="BH-0"), headers=RENDERER
            )
            assert replay.json()["decision_id"] == first.json()["decision_id"]
    finally:
        proxy.close()


def _locked_log_app(tmp_path: Path, postgres_url: str, schema: str, features: FakeFeatures) -> Any:
    return make_app(
        tmp_path,
        features=features,
        database_url=f"{postgres_url}?options=-csearch_path%3D{schema}",
        database_timeout_ms=300,
        database_cool_off_seconds=1.0,
    )


def _stored_decisions(log: Any) -> dict[str, str]:
    with log.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT invoice_id, decision_id FROM decisions").all()
    return {invoice_id: decision_id for invoice_id, decision_id in rows}


# One invoice per customer: the batch is one round, its decisions one write.
LOCKED = [
    offers_body(invoice_id=f"LOCKED-{n}", customer_id=customer)
    for n, customer in enumerate(("C0001", "C0002", "C0003"))
]


@pytest.mark.integration
@pytest.mark.postgres
def test_batches_whose_look_up_is_held_are_503_at_the_deadline_and_open_the_circuit(
    tmp_path: Path, postgres_url: str, pg_schema: str, features: FakeFeatures
) -> None:
    """The look-up of a batch's invoices waits at most the deadline: with the decisions locked,
    three batches are 503s that open the circuit (a look-up held until the server's 10 s
    statement_timeout would open none) and the next is refused at once; once the lock is gone
    and the cool-off over, every invoice is answered and stored once."""
    app = _locked_log_app(tmp_path, postgres_url, pg_schema, features)
    with running(app) as client:
        log = client.app.state.services.log
        with log.engine.connect() as holder, holder.begin():
            holder.exec_driver_sql("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")
            held = [
                client.post(BATCH, json={"invoices": LOCKED}, headers=RENDERER) for _ in range(3)
            ]
            assert [answer.status_code for answer in held] == [503] * 3
            assert all(a.json()["type"].endswith("decision-log-unavailable") for a in held)
            assert held[0].headers["retry-after"] == "1"  # one failure: the circuit is closed
            assert log.circuit.is_open
            refused = client.post(BATCH, json={"invoices": LOCKED}, headers=RENDERER)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1

        def answered() -> bool:
            again = client.post(BATCH, json={"invoices": LOCKED}, headers=RENDERER)
            return again.status_code == 200

        wait_for(answered, 10.0, "a 200 once the lock is gone and the cool-off over", every=0.2)
        results = client.post(BATCH, json={"invoices": LOCKED}, headers=RENDERER).json()["results"]
        assert [result["status"] for result in results] == [200] * 3
        assert {r["decision"]["invoice_id"]: r["decision"]["decision_id"] for r in results} == (
            _stored_decisions(log)
        )


@pytest.mark.integration
@pytest.mark.postgres
def test_a_batch_whose_write_is_held_is_503_at_the_deadline_and_the_write_goes_on(
    tmp_path: Path, postgres_url: str, pg_schema: str, features: FakeFeatures
) -> None:
    """The batch's one write waits at most the deadline: with writes to the decisions locked
    (reads still answer, so the circuit stays closed), the batch is a 503 with Retry-After: 1. The
    write itself goes on and commits once the lock is gone, before the server's statement_timeout
    would cancel it, and the batch asked again answers with those decisions."""
    app = _locked_log_app(tmp_path, postgres_url, pg_schema, features)
    with running(app) as client:
        log = client.app.state.services.log
        with log.engine.connect() as holder, holder.begin():
            holder.exec_driver_sql("LOCK TABLE decisions IN EXCLUSIVE MODE")
            held = client.post(BATCH, json={"invoices": LOCKED}, headers=RENDERER)
            assert held.status_code == 503
            assert held.json()["type"].endswith("decision-log-unavailable")
            assert held.headers["retry-after"] == "1"
            assert not log.circuit.is_open
            assert _stored_decisions(log) == {}
        wait_for(lambda: len(_stored_decisions(log)) == 3, 5.0, "the held write committed")
        stored = _stored_decisions(log)
        results = client.post(BATCH, json={"invoices": LOCKED}, headers=RENDERER).json()["results"]
        assert [result["status"] for result in results] == [200] * 3
        assert {r["decision"]["invoice_id"]: r["decision"]["decision_id"] for r in results} == (
            stored
        )
