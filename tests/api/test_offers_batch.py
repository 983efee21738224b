"""POST /v1/offers/batch: each item answered as POST /v1/offers would answer it, in order, with
the new decisions stored in one transaction (one per round when a customer has several new
invoices in the batch)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from serving.api.schemas import MAX_BATCH_INVOICES, OffersBatchResponse
from tests.factories.api import (
    FakeFeatures,
    auth,
    counting_writes,
    just_now,
    make_app,
    offers_body,
    running,
)

RENDERER = auth("renderer")
BATCH = "/v1/offers/batch"


def batch(client: Any, *items: Any) -> list[dict[str, Any]]:
    response = client.post(BATCH, json={"invoices": list(items)}, headers=RENDERER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    results: list[dict[str, Any]] = response.json()["results"]
    OffersBatchResponse.model_validate(response.json())
    return results


def stored_decisions(client: Any) -> int:
    log = client.app.state.services.log
    with log.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM decisions").scalar_one())


def test_each_item_is_answered_in_order_as_the_single_route_would(client: Any) -> None:
    client.post("/v1/offers", json=offers_body(invoice_id="INV-TAKEN"), headers=RENDERER)
    results = batch(
        client,
        offers_body(invoice_id="INV-A", customer_id="C0001"),
        offers_body(invoice_id="INV-B", customer_id="C0009"),
        offers_body(invoice_id="INV-C", max_offers=11),
        offers_body(invoice_id="INV-TAKEN", customer_id="C0002"),
        "not an invoice",
        offers_body(invoice_id="INV-D", invoice_date="2020-01-31"),
        offers_body(invoice_id="INV-E", customer_id="C0004", locale="en"),
        {**offers_body(invoice_id="INV-F"), "colour": "blue"},
    )
    assert [result["status"] for result in results] == [200, 404, 422, 409, 422, 422, 200, 422]
    assert results[0]["decision"]["invoice_id"] == "INV-A"
    assert results[0]["decision"]["policy"] == "model" and results[0]["decision"]["offers"]
    assert results[1]["problem"] == {
        "type": "urn:invoice-offers:problem:unknown-customer",
        "title": "Not Found",
        "status": 404,
        "detail": "customer C0009 is not known",
    }
    assert results[2]["problem"]["errors"][0]["loc"] == ["body", "max_offers"]
    assert results[2]["problem"]["type"] == "urn:invoice-offers:problem:validation"
    assert results[3]["problem"]["type"] == "urn:invoice-offers:problem:invoice-customer-conflict"
    assert results[4]["problem"]["errors"][0]["loc"] == ["body"]
    assert results[5]["problem"]["type"].endswith("invoice-date-out-of-range")
    assert results[5]["problem"]["errors"][0]["loc"] == ["body", "invoice_date"]
    assert (results[6]["decision"]["policy"], results[6]["decision"]["offers"]) == ("none", [])
    assert results[7]["problem"]["errors"][0]["loc"] == ["body", "colour"]
    assert all(
        set(result) == {"status", "decision"} for result in results if result["status"] == 200
    )
    # Each problem is what POST /v1/offers answers for the same body, word for word.
    alone = client.post(
        "/v1/offers", json=offers_body(invoice_id="INV-C", max_offers=11), headers=RENDERER
    )
    assert alone.json() == results[2]["problem"]
    conflict = client.post(
        "/v1/offers",
        json=offers_body(invoice_id="INV-TAKEN", customer_id="C0002"),
        headers=RENDERER,
    )
    assert conflict.json() == results[3]["problem"]
    # INV-TAKEN before, INV-A and INV-E now; nothing for the refused items.
    assert stored_decisions(client) == 3


def test_a_batch_decision_is_replayed_by_the_single_route_byte_for_byte(client: Any) -> None:
    response = client.post(
        BATCH, json={"invoices": [offers_body(invoice_id="INV-1")]}, headers=RENDERER
    )
    item = json.loads(response.text)["results"][0]["decision"]
    alone = client.post("/v1/offers", json=offers_body(invoice_id="INV-1"), headers=RENDERER)
    assert alone.json() == item
    # The stored answer's own bytes inside the batch's answer.
    assert alone.text in response.text


def test_a_single_decision_is_replayed_by_a_batch(client: Any) -> None:
    alone = client.post("/v1/offers", json=offers_body(invoice_id="INV-1"), headers=RENDERER)
    results = batch(client, offers_body(invoice_id="INV-1"), offers_body(invoice_id="INV-2"))
    assert results[0]["decision"] == alone.json()
    assert results[1]["decision"]["decision_id"] != alone.json()["decision_id"]
    again = batch(client, offers_body(invoice_id="INV-2"), offers_body(invoice_id="INV-1"))
    assert [r["decision"] for r in again] == [results[1]["decision"], results[0]["decision"]]
    assert stored_decisions(client) == 2


def test_an_invoice_twice_in_one_batch_is_answered_twice_with_one_decision(client: Any) -> None:
    results = batch(
        client,
        offers_body(invoice_id="INV-1"),
        offers_body(invoice_id="INV-1", locale="en", max_offers=1),
        offers_body(invoice_id="INV-1", customer_id="C0002"),
    )
    assert [result["status"] for result in results] == [200, 200, 409]
    assert results[1]["decision"] == results[0]["decision"]
    assert stored_decisions(client) == 1


def test_decisions_are_counted_per_item_and_replays_are_not(client: Any) -> None:
    batch(
        client,
        offers_body(invoice_id="INV-1"),
        offers_body(invoice_id="INV-2", customer_id="C0002"),
        offers_body(invoice_id="INV-3", customer_id="C0004"),
    )
    batch(client, offers_body(invoice_id="INV-1"), offers_body(invoice_id="INV-4"))
    registry = client.app.state.services.metrics.registry
    counted = {
        policy: registry.get_sample_value("offers_decisions_total", {"policy": policy})
        for policy in ("model", "none")
    }
    assert counted == {"model": 3.0, "none": 1.0}
    steps = registry.get_sample_value("offers_step_seconds_count", {"step": "decide"})
    assert steps == 4.0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([offers_body()], ["body"]),
        ({}, ["body", "invoices"]),
        ({"invoices": []}, ["body", "invoices"]),
        ({"invoices": [offers_body()] * (MAX_BATCH_INVOICES + 1)}, ["body", "invoices"]),
        ({"invoices": offers_body()}, ["body", "invoices"]),
        ({"invoices": [offers_body()], "more": 1}, ["body", "more"]),
    ],
    ids=["a list", "no invoices", "none", "501", "not a list", "an unknown field"],
)
def test_a_malformed_envelope_is_one_422_problem(client: Any, body: Any, where: list[str]) -> None:
    response = client.post(BATCH, json=body, headers=RENDERER)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:invoice-offers:problem:validation"
    assert problem["errors"][0]["loc"] == where
    assert stored_decisions(client) == 0


@pytest.mark.parametrize("item", [1, "INV-1", [offers_body()], None])
def test_an_item_that_is_no_json_object_is_its_own_422_in_json_words(
    client: Any, item: Any
) -> None:
    results = batch(client, offers_body(invoice_id="INV-1"), item)
    assert [result["status"] for result in results] == [200, 422]
    problem = results[1]["problem"]
    assert problem["errors"][0]["loc"] == ["body"]  # as POST /v1/offers would name it
    assert problem["errors"][0]["msg"] == "Input should be a JSON object"
    assert "OffersRequest" not in json.dumps(problem) and "dictionary" not in json.dumps(problem)
    if item is None:
        return  # a body of null is a missing body to the single route ("Field required")
    # The single route words the same body the same way.
    alone = client.post("/v1/offers", json=item, headers=RENDERER).json()
    assert [(e["loc"], e["msg"]) for e in alone["errors"]] == [
        (["body"], problem["errors"][0]["msg"])
    ]


def test_the_body_limit_is_the_single_routes_times_the_items(client: Any) -> None:
    limit = client.app.state.services.settings.max_request_bytes
    items = [offers_body(invoice_id=f"INV-{n:05d}-{'x' * 40}") for n in range(200)]
    body = json.dumps({"invoices": items})
    assert limit < len(body) < limit * MAX_BATCH_INVOICES
    response = client.post(
        BATCH, content=body, headers={**RENDERER, "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert len(response.json()["results"]) == 200
    too_large = client.post(
        BATCH,
        content=b"{" + b" " * (limit * MAX_BATCH_INVOICES) + b"}",
        headers={**RENDERER, "Content-Type": "application/json"},
    )
    assert too_large.status_code == 413
    single = client.post(
        "/v1/offers",
        content=json.dumps(items[:2]),
        headers={**RENDERER, "Content-Type": "application/json"},
    )
    assert single.status_code == 422
    over = client.post(
        "/v1/offers",
        content=b"{" + b" " * limit + b"}",
        headers={**RENDERER, "Content-Type": "application/json"},
    )
    assert over.status_code == 413


def test_a_write_that_fails_midway_stores_none_and_answers_503(client: Any) -> None:
    log = client.app.state.services.log
    database = Path(log.engine.url.database)
    with sqlite3.connect(database) as connection:  # the third decision's insert fails
        connection.execute(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON decisions "
            "WHEN NEW.invoice_id = 'INV-3' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    customers = ["C0001", "C0002", "C0003", "C0004"]
    items = [
        offers_body(invoice_id=f"INV-{n}", customer_id=customer)
        for n, customer in enumerate(customers, start=1)
    ]
    response = client.post(BATCH, json={"invoices": items}, headers=RENDERER)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"].endswith("decision-log-unavailable")
    assert "disk full" not in response.text
    assert stored_decisions(client) == 0
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER refuse_third")
    results = batch(client, *items)
    assert [result["status"] for result in results] == [200] * 4
    assert stored_decisions(client) == 4


def test_a_write_that_fails_in_a_later_round_keeps_the_earlier_rounds(client: Any) -> None:
    """A customer's invoices are decided one round each: the rounds written before the one that
    fails stay stored, and the same batch sent again replays them and decides the rest."""
    log = client.app.state.services.log
    database = Path(log.engine.url.database)
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON decisions "
            "WHEN NEW.invoice_id = 'INV-3' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    items = [offers_body(invoice_id=f"INV-{n}") for n in range(1, 5)]  # all C0001's
    response = client.post(BATCH, json={"invoices": items}, headers=RENDERER)
    assert response.status_code == 503
    assert stored_decisions(client) == 2  # INV-1 and INV-2, one round each
    first = [client.post("/v1/offers", json=item, headers=RENDERER).json() for item in items[:2]]
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER refuse_third")
    results = batch(client, *items)
    assert [result["status"] for result in results] == [200] * 4
    assert [result["decision"] for result in results[:2]] == first
    assert stored_decisions(client) == 4


def test_degraded_items_are_not_kept_as_the_invoices_decision(
    client: Any, features: FakeFeatures
) -> None:
    features.fail = "down"
    down = batch(client, offers_body(invoice_id="INV-1"), offers_body(invoice_id="INV-2"))
    assert [r["decision"]["degraded"] for r in down] == ["feature_store_unavailable"] * 2
    assert all(r["decision"]["offers"] == [] for r in down)
    still_down = batch(client, offers_body(invoice_id="INV-1"))
    assert still_down[0]["decision"] == down[0]["decision"]
    features.fail = None
    recovered = batch(client, offers_body(invoice_id="INV-1"), offers_body(invoice_id="INV-2"))
    assert all(r["decision"]["degraded"] is None for r in recovered)
    assert [r["decision"]["decision_id"] for r in recovered] != [
        r["decision"]["decision_id"] for r in down
    ]
    alone = client.post("/v1/offers", json=offers_body(invoice_id="INV-2"), headers=RENDERER)
    assert alone.json() == recovered[1]["decision"]
    log = client.app.state.services.log
    with log.engine.connect() as connection:
        superseded = connection.exec_driver_sql(
            "SELECT count(*) FROM superseded_decisions"
        ).scalar_one()
    assert superseded == 2


@pytest.mark.postgres
def test_a_batch_on_a_postgresql_log_is_decided_and_replayed(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    url = f"{postgres_url}?options=-csearch_path%3D{pg_schema}"
    with running(make_app(tmp_path, database_url=url)) as client:
        client.post("/v1/offers", json=offers_body(invoice_id="INV-0"), headers=RENDERER)
        items = [offers_body(invoice_id=f"INV-{n}") for n in range(4)]
        items.append(offers_body(invoice_id="INV-0", customer_id="C0002"))
        results = batch(client, *items)
        assert [r["status"] for r in results] == [200] * 4 + [409]
        alone = client.post("/v1/offers", json=offers_body(invoice_id="INV-3"), headers=RENDERER)
        assert alone.json() == results[3]["decision"]
        assert stored_decisions(client) == 4


def test_a_dry_run_item_is_answered_and_stored_nowhere(client: Any) -> None:
    results = batch(
        client,
        offers_body(invoice_id="INV-1", dry_run=True),
        offers_body(invoice_id="INV-2"),
        offers_body(invoice_id="INV-2", dry_run=True),
    )
    assert results[0]["decision"]["dry_run"] is True
    assert "dry_run" not in results[1]["decision"]
    # A dry run of an invoice decided for real in the same call is answered with that decision.
    assert results[2]["decision"] == results[1]["decision"]
    assert stored_decisions(client) == 1
    real = batch(client, offers_body(invoice_id="INV-1"))
    assert "dry_run" not in real[0]["decision"]
    assert real[0]["decision"]["decision_id"] != results[0]["decision"]["decision_id"]
    assert stored_decisions(client) == 2


def test_a_query_parameter_the_batch_does_not_take_is_422_naming_it(client: Any) -> None:
    """``dry_run`` belongs to each item: asked of the whole batch in the query, it must not be
    ignored and the invoices decided for real."""
    body = {"invoices": [offers_body(invoice_id="INV-1"), offers_body(invoice_id="INV-2")]}
    refused = client.post(BATCH, params={"dry_run": "true"}, json=body, headers=RENDERER)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"loc": ["query", "dry_run"], "msg": "no such query parameter", "type": "extra_forbidden"}
    ]
    assert stored_decisions(client) == 0
    assert client.post(BATCH, params={"dry_run": "true"}, json=body).status_code == 401


def _counting_model_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each call of the scorer's steps from now on, with the rows it scored."""
    from serving.scoring_model import LightGBMScorer

    calls: list[tuple[str, int]] = []
    for name in ("acceptance", "churn_risks", "contributions"):
        original = getattr(LightGBMScorer, name)

        def counted(self: Any, rows: Any, _original: Any = original, _name: str = name) -> Any:
            calls.append((_name, len(rows)))
            return _original(self, rows)

        monkeypatch.setattr(LightGBMScorer, name, counted)
    return calls


def _invoices_of(*customers: str) -> list[dict[str, Any]]:
    """One invoice per customer given, ``INV-M0`` onwards, in that order."""
    return [
        offers_body(invoice_id=f"INV-M{number}", customer_id=customer)
        for number, customer in enumerate(customers)
    ]


def test_a_batch_is_scored_in_one_model_call_per_step(
    client: Any, features: FakeFeatures, monkeypatch: pytest.MonkeyPatch
) -> None:
    features.rows["C0005"] = features.rows["C0001"]
    features.rows["C0006"] = features.rows["C0002"]
    calls = _counting_model_calls(monkeypatch)
    results = batch(client, *_invoices_of("C0001", "C0002", "C0005", "C0003", "C0006"))

    policies = [result["decision"]["policy"] for result in results]
    assert policies == ["model", "model", "model", "non_personalised", "model"]
    shown = sum(len(r["decision"]["offers"]) for r in results if r["decision"]["policy"] == "model")
    assert [name for name, _ in calls] == ["acceptance", "churn_risks", "contributions"]
    assert calls[1] == ("churn_risks", 4)  # the four invoices the model decided
    assert calls[2] == ("contributions", shown)


def test_a_customers_second_invoice_is_scored_in_a_round_after_the_first(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting_model_calls(monkeypatch)
    results = batch(client, *_invoices_of("C0001", "C0002", "C0001", "C0003", "C0002"))

    policies = [result["decision"]["policy"] for result in results]
    assert policies == ["model", "model", "model", "non_personalised", "model"]
    # INV-M0, M1 and M3 first (M3 by the segment's list, without the model), then M2 and M4.
    assert [(name, rows) for name, rows in calls if name == "churn_risks"] == [
        ("churn_risks", 2),
        ("churn_risks", 2),
    ]


def _decided_and_declined(client: Any) -> str:
    """C0001's invoice INV-OLD decided, and the first offer it showed declined: that offer."""
    old = client.post("/v1/offers", json=offers_body(invoice_id="INV-OLD"), headers=RENDERER)
    declined: str = old.json()["offers"][0]["offer_id"]
    event = {
        "event_id": "EV-OLD",
        "decision_id": old.json()["decision_id"],
        "offer_id": declined,
        "type": "decline",
        "occurred_at": just_now(),
    }
    assert client.post("/v1/events", json=event, headers=RENDERER).status_code == 202
    return declined


def _counting_writes(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each write of decisions to the app's log, from now on."""
    return counting_writes(client.app.state.services.log, monkeypatch)


def _without_decision_id(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "decision_id"}


def test_a_customers_invoices_in_one_batch_are_answered_as_if_sent_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decline cap counts the customer's latest invoices: a customer's later invoice in the
    batch must see the earlier one's decision in the log, as it would sent after it alone. With a
    cap of one invoice, INV-OLD's decline blocks its offer on INV-A but no longer on INV-B (one
    invoice later), nor on a dry run after INV-B; a dry run before INV-A still sees it."""
    items = [
        offers_body(invoice_id="INV-DRY1", dry_run=True),
        offers_body(invoice_id="INV-A"),
        offers_body(invoice_id="INV-OTHER", customer_id="C0002"),
        offers_body(invoice_id="INV-B"),
        offers_body(invoice_id="INV-DRY2", dry_run=True),
    ]
    with running(make_app(tmp_path / "batch", decline_cap_invoices=1)) as client:
        declined = _decided_and_declined(client)
        writes = _counting_writes(client, monkeypatch)
        together = [result["decision"] for result in batch(client, *items)]
        replayed = [result["decision"] for result in batch(client, *items[1:4])]
    with running(make_app(tmp_path / "alone", decline_cap_invoices=1)) as client:
        _decided_and_declined(client)
        alone = [client.post("/v1/offers", json=item, headers=RENDERER).json() for item in items]

    shown = [[offer["offer_id"] for offer in answer["offers"]] for answer in alone]
    assert declined not in shown[0] and declined not in shown[1]
    assert declined in shown[3] and declined in shown[4]  # the decline is two invoices ago
    assert [_without_decision_id(answer) for answer in together] == [
        _without_decision_id(answer) for answer in alone
    ]
    # INV-A and INV-OTHER in one write, then INV-B after them; the dry runs in none.
    assert writes == [2, 1]
    assert replayed == together[1:4]


def test_a_batch_of_one_invoice_per_customer_is_written_once(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _counting_writes(client, monkeypatch)
    results = batch(
        client,
        offers_body(invoice_id="INV-1", customer_id="C0001"),
        offers_body(invoice_id="INV-2", customer_id="C0002"),
        offers_body(invoice_id="INV-3", customer_id="C0003"),
        offers_body(invoice_id="INV-4", customer_id="C0001", dry_run=True),
        offers_body(invoice_id="INV-1", customer_id="C0001"),
    )
    assert [result["status"] for result in results] == [200] * 5
    assert writes == [3]


def test_without_a_decline_cap_a_customers_invoices_are_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a cap of no invoices no decision changes what another may show: one round, one write.
    items = [offers_body(invoice_id=f"INV-{n}") for n in range(4)]
    with running(make_app(tmp_path / "batch", decline_cap_invoices=0)) as client:
        writes = _counting_writes(client, monkeypatch)
        together = [result["decision"] for result in batch(client, *items)]
    with running(make_app(tmp_path / "alone", decline_cap_invoices=0)) as client:
        alone = [client.post("/v1/offers", json=item, headers=RENDERER).json() for item in items]
    assert writes == [4]
    assert [_without_decision_id(answer) for answer in together] == [
        _without_decision_id(answer) for answer in alone
    ]


def _each_alone(client: Any, items: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Each item sent to POST /v1/offers one after another: its status and its body."""
    answers = []
    for item in items:
        response = client.post("/v1/offers", json=item, headers=RENDERER)
        answers.append((response.status_code, response.json()))
    return answers


def _as_sent(results: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    return [(result["status"], result.get("decision", result.get("problem"))) for result in results]


@pytest.mark.parametrize(
    "customers",
    [
        # An unknown customer's 404 stores nothing: the invoice is then the next customer's, and
        # the unknown customer asking again meets that decision (409).
        ["C0009", "C0001", "C0002", "C0001", "C0009"],
        ["C0001", "C0002", "C0001", "C0009"],
        ["C0009", "C0009", "C0001"],
    ],
)
def test_an_invoice_asked_for_several_customers_is_answered_as_one_after_another(
    tmp_path: Path, customers: list[str]
) -> None:
    items = [offers_body(invoice_id="INV-U", customer_id=who) for who in customers]
    with running(make_app(tmp_path / "batch")) as client:
        together = _as_sent(batch(client, *items))
    with running(make_app(tmp_path / "alone")) as client:
        alone = _each_alone(client, items)
    assert [status for status, _ in together] == [status for status, _ in alone]
    decided = [answer for status, answer in together if status == 200]
    assert decided and all(answer == decided[0] for answer in decided)  # one decision, replayed
    assert {answer["customer_id"] for answer in decided} == {"C0001"}


def test_an_unclaimed_invoice_is_decided_in_its_place_among_the_customers_invoices(
    tmp_path: Path,
) -> None:
    """With a decline cap of one invoice, INV-OLD's declined offer is blocked on the customer's
    next invoice only: INV-X, asked first for an unknown customer and then for C0001, is that
    next invoice, and INV-B the one after, as when they are sent one after another."""
    items = [
        offers_body(invoice_id="INV-X", customer_id="C0009"),
        offers_body(invoice_id="INV-X"),
        offers_body(invoice_id="INV-B"),
    ]
    with running(make_app(tmp_path / "batch", decline_cap_invoices=1)) as client:
        declined = _decided_and_declined(client)
        together = _as_sent(batch(client, *items))
    with running(make_app(tmp_path / "alone", decline_cap_invoices=1)) as client:
        _decided_and_declined(client)
        alone = _each_alone(client, items)
    assert [status for status, _ in together] == [404, 200, 200]
    shown = [[offer["offer_id"] for offer in answer["offers"]] for _, answer in together[1:]]
    assert declined not in shown[0] and declined in shown[1]
    assert [_without_decision_id(answer) for _, answer in together[1:]] == [
        _without_decision_id(answer) for _, answer in alone[1:]
    ]


def test_a_provisional_decision_asked_again_after_another_customer_is_decided_afresh(
    client: Any, features: FakeFeatures
) -> None:
    features.fail = "down"
    provisional = client.post("/v1/offers", json=offers_body(invoice_id="INV-P"), headers=RENDERER)
    assert provisional.json()["degraded"] == "feature_store_unavailable"
    features.fail = None
    results = batch(
        client,
        offers_body(invoice_id="INV-P", customer_id="C0002"),
        offers_body(invoice_id="INV-P"),
    )
    assert [result["status"] for result in results] == [409, 200]
    assert results[1]["decision"]["degraded"] is None and results[1]["decision"]["offers"]
    replayed = client.post("/v1/offers", json=offers_body(invoice_id="INV-P"), headers=RENDERER)
    assert replayed.json() == results[1]["decision"]
