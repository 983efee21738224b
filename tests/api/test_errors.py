"""Every error is problem+json with the right status and a detail that names the problem."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tests.factories.api import auth, make_app, offers_body

RENDERER = auth("renderer")


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    """The app with a route that fails unexpectedly."""

    @app.get("/v1/broken", include_in_schema=False)
    def broken() -> None:
        raise RuntimeError("secret internal state at /srv/offers.db")

    return app


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert "Traceback" not in response.text
    return problem


def _post_raw(client: Any, content: Any) -> Any:
    """``POST /v1/offers`` with ``content`` sent as it is, labelled as JSON."""
    return client.post(
        "/v1/offers", content=content, headers={**RENDERER, "Content-Type": "application/json"}
    )


def test_a_body_over_the_limit_is_413_by_its_content_length(client: Any) -> None:
    body = json.dumps(offers_body(padding="x" * 17_000))
    problem = _problem(_post_raw(client, body), 413)
    assert problem["title"] == "Content Too Large"
    assert problem["detail"] == "the request body is larger than 16384 bytes"


def test_a_streamed_body_over_the_limit_is_413_as_the_bytes_arrive(client: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"invoice_id": "INV-1", "customer_id": "C0001", "padding": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    response = _post_raw(client, chunks())
    assert "content-length" not in response.request.headers  # sent chunked
    assert _problem(response, 413)["detail"] == "the request body is larger than 16384 bytes"


def test_a_body_just_under_the_limit_is_read(client: Any) -> None:
    body = json.dumps(offers_body(padding="x" * 15_000))
    response = _post_raw(client, body)
    # Read and validated (the extra field is refused), not cut off.
    assert _problem(response, 422)["errors"][0]["loc"] == ["body", "padding"]


def test_malformed_json_is_422_saying_where_the_parser_stopped(client: Any) -> None:
    problem = _problem(_post_raw(client, b'{"invoice_id": '), 422)
    assert problem["errors"] == [
        {
            "loc": ["body"],
            "msg": "the body is not valid JSON at character 16: Expecting value",
            "type": "json_invalid",
        }
    ]
    # 15 characters sent: the parser wanted a value where the body ended, at the 16th.
    assert problem["detail"] == "body: the body is not valid JSON at character 16: Expecting value"


def test_a_body_that_is_not_utf8_is_422_like_malformed_json(client: Any) -> None:
    problem = _problem(_post_raw(client, b"\xff\xfe{"), 422)
    assert problem["errors"] == [
        {"loc": ["body"], "msg": "the body is not valid JSON", "type": "json_invalid"}
    ]


@pytest.mark.parametrize(
    ("content_type", "media"),
    [
        ("text/plain", "text/plain"),
        ("Application/X-WWW-Form-Urlencoded; charset=utf-8", "application/x-www-form-urlencoded"),
    ],
)
def test_a_json_body_sent_under_another_media_type_is_told_so(
    client: Any, content_type: str, media: str
) -> None:
    for path, body in (
        ("/v1/offers", offers_body()),
        ("/v1/offers/batch", {"invoices": [offers_body()]}),
    ):
        response = client.post(
            path,
            content=json.dumps(body).encode(),
            headers={**RENDERER, "Content-Type": content_type},
        )
        problem = _problem(response, 422)
        assert problem["errors"] == [
            {
                "loc": ["body"],
                "msg": "the body must be sent as JSON (Content-Type: application/json), not "
                + media,
                "type": "model_attributes_type",
            }
        ], path
    # The same body labelled as JSON is decided.
    decided = client.post(
        "/v1/offers",
        content=json.dumps(offers_body()).encode(),
        headers={**RENDERER, "Content-Type": "application/json; charset=utf-8"},
    )
    assert decided.status_code == 200, decided.text


def test_a_number_too_large_for_a_whole_number_field_is_told_so(client: Any) -> None:
    body = b'{"invoice_id": "INV-1", "customer_id": "C0001", "max_offers": 1e308}'
    problem = _problem(_post_raw(client, body), 422)
    assert problem["errors"] == [
        {
            "loc": ["body", "max_offers"],
            "msg": "Input should be a whole number; this one is too large for the field",
            "type": "int_parsing_size",
        }
    ]


def test_an_unknown_path_is_404(client: Any) -> None:
    assert _problem(client.get("/v1/nothing-here"), 404)["detail"] == "no such resource"


def test_a_wrong_method_is_405_with_allow(client: Any) -> None:
    response = client.delete("/v1/offers", headers=RENDERER)
    assert _problem(response, 405)["detail"] == "method not allowed on this resource"
    assert response.headers["allow"] == "POST"


def test_an_unexpected_error_is_500_without_internal_text(client: Any) -> None:
    problem = _problem(client.get("/v1/broken"), 500)
    assert problem["detail"] == "the server could not answer this request"
    assert "secret" not in json.dumps(problem) and "/srv" not in json.dumps(problem)


def test_bad_path_and_query_parameters_are_422(client: Any) -> None:
    response = client.get(
        "/v1/customers/C0001/usage-summary",
        params={"invoice_date": "yesterday", "locale": "fi"},
        headers=RENDERER,
    )
    problem = _problem(response, 422)
    assert {tuple(error["loc"]) for error in problem["errors"]} == {
        ("query", "invoice_date"),
        ("query", "locale"),
    }
    assert "invoice_date" in problem["detail"] and "locale" in problem["detail"]


def test_the_schema_documents_errors_as_problem_json(client: Any) -> None:
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/offers"]["post"]["responses"]
    assert set(responses) >= {"200", "401", "403", "404", "409", "413", "422"}
    assert list(responses["422"]["content"]) == ["application/problem+json"]
    assert responses["422"]["content"]["application/problem+json"]["schema"]["$ref"].endswith(
        "/ValidationProblem"
    )
    assert list(responses["200"]["content"]) == ["application/json"]


def test_a_request_during_start_up_is_503(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = make_app(tmp_path)
    client = TestClient(app, raise_server_exceptions=False)  # lifespan not run
    problem = _problem(client.post("/v1/offers", json=offers_body(), headers=RENDERER), 503)
    assert problem["detail"] == "the service is starting or stopping"


def test_offers_check_the_key_then_the_query_then_the_role(client: Any) -> None:
    """A caller without a key learns nothing about the route, and a misspelt parameter is
    named before the role is."""
    path = "/v1/offers?dry_rn=true"
    assert _problem(client.post(path, json=offers_body()), 401)["type"].endswith(":unauthorized")
    problem = _problem(client.post(path, json=offers_body(), headers=auth("marketing")), 422)
    assert problem["detail"] == "dry_rn: no such query parameter"
    forbidden = _problem(
        client.post("/v1/offers", json=offers_body(), headers=auth("marketing")), 403
    )
    assert forbidden["detail"] == "this route needs the renderer role; the key has marketing"
    assert client.post("/v1/offers", json=offers_body(), headers=auth("admin")).status_code == 200
    assert client.post("/v1/offers", json=offers_body(), headers=RENDERER).status_code == 200


def test_a_query_parameter_the_route_does_not_take_is_422_naming_it(client: Any) -> None:
    """A misspelt invoice_date must not silently mean "today"."""
    path = "/v1/customers/C0001/usage-summary"
    response = client.get(f"{path}?invoice_dat=2026-11-30&locale=en", headers=RENDERER)
    problem = _problem(response, 422)
    assert problem["detail"] == "invoice_dat: no such query parameter"
    assert problem["errors"] == [
        {
            "loc": ["query", "invoice_dat"],
            "msg": "no such query parameter",
            "type": "extra_forbidden",
        }
    ]
    spelt = client.get(f"{path}?invoice_date=2026-11-30&locale=en", headers=RENDERER)
    assert spelt.status_code == 200
    assert spelt.json()["period"] == {"start": "2026-10-01", "end": "2026-10-31"}
    # Without a key the answer is 401 all the same; probes and scrapers may add what they like.
    assert client.get(f"{path}?invoice_dat=2026-11-30").status_code == 401
    assert client.get("/health/live?probe=1").status_code == 200
    assert client.get("/metrics?name[]=offers_decisions_total").status_code == 200
