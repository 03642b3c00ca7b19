"""``cors``, ``validate`` and ``transform`` in front of a ``mock`` handler under ``backworks up``, over HTTP.

Every error path (invalid body or query, 415, 400, a refused preflight) is answered without reaching the handler:
its stage is absent from ``server-timing``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy

pytestmark = pytest.mark.e2e

BLUEPRINT = """name: notes
plugins:
  browsers:
    type: cors
    config:
      allow_origins: ["https://*.example.com"]
      allow_methods: [GET, POST]
      allow_headers: [content-type, x-user]
      expose_headers: [x-owner]
      allow_credentials: true
      max_age_s: 300
  check:
    type: validate
    config:
      body: {file: schemas/note.json}
      query: {draft: {type: boolean}}
  shape:
    type: transform
    config:
      request:
        headers: {set: {x-origin: "{header.origin}"}, remove: [x-user]}
        query: {set: {owner: "{header.x-user}"}}
      response:
        headers: {set: {x-owner: "{query.owner}"}, remove: [x-secret]}
        body: {rename: {/title: /name}, set: {/links/self: "/notes/{path.id}"}}
endpoints:
  note:
    path: /notes/{id}
    methods: [POST]
    plugins: [browsers, check, shape]
    handler:
      type: mock
      config:
        status: 201
        headers: {x-secret: internal}
        body: {title: "Note {path.id}", origin: "{header.origin}", user: "{header.x-user}", owner: "{query.owner}"}
"""
NOTE_SCHEMA = {
    "type": "object",
    "required": ["title"],
    "properties": {"title": {"type": "string", "minLength": 1}, "tags": {"type": "array", "items": {"type": "string"}}},
    "additionalProperties": False,
}
ORIGIN = "https://app.example.com"
HANDLER = "note-handler.request"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``backworks up`` on the blueprint (its schema in a file next to it), started once for the module."""
    root = tmp_path_factory.mktemp("shape")
    (root / "schemas").mkdir()
    (root / "schemas" / "note.json").write_text(json.dumps(NOTE_SCHEMA))
    (root / "blueprint.yaml").write_text(BLUEPRINT)
    port, log = free_port(), root / "up.log"
    up = start(
        "up",
        "blueprint.yaml",
        "--port",
        str(port),
        "--nats-port",
        "0",
        log=log,
        cwd=root,
        env={"BACKWORKS_STATE_DIR": str(root / "state")},
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process=up, log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(up, timeout=15)
    assert up.returncode == 0, log.read_text()[-3000:]


def stages(response: httpx.Response) -> list[str]:
    return [entry.split(";")[0].strip() for entry in response.headers["server-timing"].split(",")]


def post(base: str, body: bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    headers = {"origin": ORIGIN, "content-type": content_type, **headers}
    return httpx.post(f"{base}/notes/7", content=body, headers=headers, timeout=10)


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert HANDLER not in stages(response), "an error path never reaches the handler"
    body: dict[str, Any] = response.json()
    return body


def test_a_valid_request_is_transformed_both_ways_and_gets_cors_headers(base: str) -> None:
    response = post(base, b'{"title": "hello", "tags": ["a"]}', **{"x-user": "ann"})
    assert response.status_code == 201, response.text
    assert stages(response) == [
        "browsers.request",
        "check.request",
        "shape.request",
        HANDLER,
        "shape.response",
        "browsers.response",
        "total",
    ]
    assert response.json() == {
        "name": "Note 7",
        "origin": ORIGIN,
        "user": "",  # removed from the request by transform before the handler
        "owner": "ann",  # moved into the query by transform
        "links": {"self": "/notes/7"},
    }
    assert response.headers["x-owner"] == "ann" and "x-secret" not in response.headers
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-expose-headers"] == "x-owner"
    assert response.headers["vary"] == "origin"


def test_an_invalid_body_is_422_with_every_violation_and_cors_headers(base: str) -> None:
    problem = problem_of(post(base, b'{"title": "", "tags": [1, "b", 2], "extra": true}'), 422)
    errors = {(e["pointer"], e["keyword"]) for e in problem["errors"]}
    assert errors == {
        ("/body/title", "minLength"),
        ("/body/tags/0", "type"),
        ("/body/tags/2", "type"),
        ("/body", "additionalProperties"),
    }
    assert problem["error_count"] == 4


def test_a_query_parameter_of_the_wrong_type_is_422(base: str) -> None:
    response = httpx.post(f"{base}/notes/7?draft=maybe", json={"title": "t"}, timeout=10)
    problem = problem_of(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/query/draft"]


def test_a_body_that_is_not_json_is_415(base: str) -> None:
    response = post(base, b"title=hello", content_type="application/x-www-form-urlencoded")
    problem = problem_of(response, 415)
    assert "must be JSON" in problem["detail"]
    assert response.headers["access-control-allow-origin"] == ORIGIN, "a page can read the error"


def test_malformed_json_is_400(base: str) -> None:
    problem = problem_of(post(base, b'{"title": "unfinished'), 400)
    assert problem["title"] == "Malformed JSON"


def test_a_preflight_on_an_endpoint_without_options_is_answered_by_cors(base: str) -> None:
    headers = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "Content-Type",
    }
    response = httpx.options(f"{base}/notes/7", headers=headers, timeout=10)
    assert response.status_code == 204, response.text
    # Response stages still run after an early answer; transform leaves alone what it did not let through.
    assert stages(response) == ["browsers.request", "shape.response", "browsers.response", "total"]
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert response.headers["access-control-allow-headers"] == "content-type, x-user"
    assert response.headers["access-control-max-age"] == "300"
    assert "origin" in response.headers["vary"]


@pytest.mark.parametrize(
    ("origin", "method", "detail"),
    [
        ("https://example.com.evil.test", "POST", "origin 'https://example.com.evil.test' is not allowed"),
        (ORIGIN, "DELETE", "method 'DELETE' is not allowed cross-origin"),
    ],
)
def test_a_refused_preflight_is_403_without_allow_headers(base: str, origin: str, method: str, detail: str) -> None:
    headers = {"origin": origin, "access-control-request-method": method}
    response = httpx.options(f"{base}/notes/7", headers=headers, timeout=10)
    problem = problem_of(response, 403)
    assert detail in problem["detail"]
    assert not [name for name in response.headers if name.startswith("access-control-allow-")]


def test_an_actual_request_from_a_disallowed_origin_is_served_without_cors_headers(base: str) -> None:
    response = post(base, b'{"title": "t"}', origin="https://evil.test")
    assert response.status_code == 201
    assert HANDLER in stages(response)
    assert not [name for name in response.headers if name.startswith("access-control-")]
    assert response.headers["vary"] == "origin"


def test_a_plain_options_request_is_405_not_sent_to_the_handler(base: str) -> None:
    response = httpx.options(f"{base}/notes/7", timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "OPTIONS, POST"
