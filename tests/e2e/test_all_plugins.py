"""All eight built-in plugins in one blueprint under ``backworks up``: real processes, HTTP.

cors, api-key, jwt, authorize, rate-limit, cache, validate and transform guard two endpoints in front of ``mock``
handlers. A request with a bad key, an expired token, a missing scope, an invalid body, a disallowed origin or
over the rate limit gets its status and a problem+json document, and never reaches the handler: the handler's
stage is absent from ``Server-Timing`` and its marker from the body.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backworks.local.ports import free_port
from backworks.plugins.api_key import digest
from tests.e2e.processes import start, stop, wait_healthy
from tests.files import write_blueprint
from tests.plugins.jwt.tokens import AUDIENCE, ISSUER, SECRET, token

pytestmark = pytest.mark.e2e

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210", "carol": "carol-key-5555555555"}
HANDLED = "handled-by-mock"
ORIGIN = "https://app.example.com"
LIMIT = 4

BLUEPRINT = """
name: everything
defaults: {{timeout_ms: 5000}}
plugins:
  browsers:
    type: cors
    config: {{allow_origins: ["{origin}"], allow_credentials: true, expose_headers: [ratelimit-remaining]}}
  keys:
    type: api-key
    config:
      keys:
        - {{consumer: alice, sha256: {alice}, scopes: [notes:write]}}
        - {{consumer: bob, sha256: {bob}, scopes: [notes:read]}}
        - {{consumer: carol, sha256: {carol}, scopes: [notes:write]}}
  token: {{type: jwt, config: {{algorithms: [HS256], secret: "{secret}", issuer: "{issuer}", audience: "{audience}"}}}}
  writers: {{type: authorize, config: {{scopes: [notes:write]}}}}
  limit: {{type: rate-limit, config: {{limit: {limit}, window_s: 60, by: consumer}}}}
  memo: {{type: cache, config: {{ttl_s: 60}}}}
  check:
    type: validate
    config:
      body:
        type: object
        required: [title]
        additionalProperties: false
        properties: {{title: {{type: string, minLength: 1}}}}
  shape: {{type: transform, config: {{request: {{headers: {{set: {{x-owner: "{{principal.consumer}}"}}}}}}}}}}
endpoints:
  create-note:
    path: /notes
    methods: [POST]
    plugins: [browsers, keys, writers, limit, check, shape]
    handler: {{type: mock, config: {{status: 201, body: {{marker: {handled}, owner: "{{header.x-owner}}"}}}}}}
  get-note:
    path: /notes/{{id:int}}
    plugins: [browsers, token, limit, memo]
    handler: {{type: mock, config: {{body: {{marker: {handled}, id: "{{path.id}}"}}}}}}
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("everything")
    text = BLUEPRINT.format(
        origin=ORIGIN, alice=digest(KEYS["alice"]), bob=digest(KEYS["bob"]), carol=digest(KEYS["carol"]),
        secret=SECRET, issuer=ISSUER, audience=AUDIENCE, limit=LIMIT, handled=HANDLED,
    )  # fmt: skip
    blueprint = write_blueprint(tmp, text)
    port, log = free_port(), tmp / "up.log"
    up = start("up", str(blueprint), "--port", str(port), "--nats-port", str(free_port()), log=log, cwd=tmp)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout=120, process=up, log=log)
        yield url
    finally:
        stop(up, timeout=20)


def stages(response: httpx.Response) -> list[str]:
    timing = response.headers.get("server-timing", "")
    return [entry.split(";")[0].strip() for entry in timing.split(",") if entry.strip()]


def refused(response: httpx.Response, status: int, handler: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert f"{handler}.request" not in stages(response), stages(response)
    assert HANDLED not in response.text
    document: dict[str, Any] = response.json()
    assert document["status"] == status and document["detail"]
    return document


def post(base: str, consumer: str | None, body: Any = None, **headers: str) -> httpx.Response:
    sent = {"origin": ORIGIN, **headers}
    if consumer is not None:
        sent["x-api-key"] = KEYS[consumer]
    return httpx.post(f"{base}/notes", json=body, headers=sent, timeout=10)


def test_every_plugin_answers_its_error_path_and_the_handler_sees_only_good_requests(base: str) -> None:
    created = post(base, "alice", {"title": "milk"})
    assert created.status_code == 201, created.text
    assert created.json() == {"marker": HANDLED, "owner": "alice"}, "transform set x-owner from the principal"
    assert created.headers["access-control-allow-origin"] == ORIGIN
    assert created.headers["ratelimit-limit"] == str(LIMIT)
    assert created.headers["ratelimit-remaining"] == str(LIMIT - 1)
    assert stages(created)[:6] == [
        "browsers.request", "keys.request", "writers.request", "limit.request", "check.request", "shape.request",
    ]  # fmt: skip

    missing = refused(post(base, None, {"title": "milk"}), 401, "create-note-handler")
    assert missing["title"] == "Unauthorized"
    assert refused(post(base, "bob", {"title": "milk"}), 403, "create-note-handler")["missing_scopes"] == [
        "notes:write"
    ]
    invalid = refused(post(base, "alice", {"title": "", "extra": 1}), 422, "create-note-handler")
    assert {error["pointer"] for error in invalid["errors"]} == {"/body", "/body/title"}
    not_json = httpx.post(
        f"{base}/notes", content=b"milk", headers={"x-api-key": KEYS["alice"], "content-type": "text/plain"}
    )
    refused(not_json, 415, "create-note-handler")
    assert not_json.headers["ratelimit-remaining"] == str(LIMIT - 3), "the 422 and the 415 passed the limiter"
    # One budget per consumer, whichever plugin authenticated it: alice's token spends what her key left.
    as_alice = {"authorization": f"Bearer {token(sub='alice')}"}
    fourth = httpx.get(f"{base}/notes/9", headers=as_alice)
    assert fourth.status_code == 200 and fourth.headers["ratelimit-remaining"] == "0"
    refused(httpx.get(f"{base}/notes/9", headers=as_alice), 429, "get-note-handler")

    preflight_headers = {"access-control-request-method": "POST", "access-control-request-headers": "x-api-key"}
    allowed = httpx.options(f"{base}/notes", headers={"origin": ORIGIN, **preflight_headers})
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "create-note-handler.request" not in stages(allowed)
    evil = httpx.options(f"{base}/notes", headers={"origin": "https://evil.test", **preflight_headers})
    refused(evil, 403, "create-note-handler")
    assert not any(name.startswith("access-control-allow") for name in evil.headers)

    # rate-limit: carol's budget is LIMIT requests a minute; the next one is refused before the handler.
    for _ in range(LIMIT):
        assert post(base, "carol", {"title": "x"}).status_code == 201
    over = refused(post(base, "carol", {"title": "x"}), 429, "create-note-handler")
    assert over["title"] == "Too Many Requests"
    assert int(post(base, "carol", {"title": "x"}).headers["retry-after"]) > 0

    expired = httpx.get(f"{base}/notes/7", headers={"authorization": f"Bearer {token(exp=1)}"})
    assert refused(expired, 401, "get-note-handler")["detail"] == "token expired"
    good = {"authorization": f"Bearer {token(sub='dave')}"}  # its own rate-limit budget
    first = httpx.get(f"{base}/notes/7", headers=good)
    assert first.status_code == 200 and first.json() == {"marker": HANDLED, "id": "7"}
    assert first.headers["x-cache"] == "miss" and "get-note-handler.request" in stages(first)
    second = httpx.get(f"{base}/notes/7", headers=good)
    assert second.status_code == 200 and second.json() == first.json()
    assert second.headers["x-cache"] == "hit" and "get-note-handler.request" not in stages(second)
