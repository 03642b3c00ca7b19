"""api-key, jwt and authorize under ``backworks up``: real processes, a real JWKS endpoint, HTTP.

Every refusal is checked for its status, its problem+json body and challenge, and for not reaching the
handler: the handler's stage is absent from ``Server-Timing`` and its marker from the body. A local
processor (``principal-headers``, which requires the ``principal`` capability) copies the principal into
request headers, so the ``mock`` handler shows who called.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from backworks.local.ports import free_port
from backworks.plugins.api_key import digest
from tests.e2e.processes import start, stop, wait_healthy
from tests.files import write_blueprint
from tests.plugins.jwt.tokens import AUDIENCE, ISSUER, JwksServer, jwks_server, signing_key, token, unsigned

pytestmark = pytest.mark.e2e

ALICE_KEY, BOB_KEY = "alice-key-0123456789", "bob-key-9876543210"
HANDLED = "handled-by-mock"

PRINCIPAL_HEADERS = """
from backworks import Continue, Envelope, RequestProcessor


class PrincipalHeaders(RequestProcessor):
    name = "principal-headers"
    version = "1.0.0"
    description = "Copies the principal into x-consumer and x-scopes request headers."
    requires_capabilities = ("principal",)

    async def process_request(self, envelope: Envelope) -> Continue:
        assert envelope.principal is not None
        envelope.set_header("x-consumer", envelope.principal.consumer)
        envelope.set_header("x-scopes", " ".join(envelope.principal.scopes))
        envelope.set_header("x-kind", envelope.principal.kind)
        return Continue(envelope)
"""

BLUEPRINT = """
name: secured
plugin_dirs: [local]
defaults: {{timeout_ms: 5000}}
plugins:
  keys:
    type: api-key
    config:
      query: api_key
      keys:
        - {{consumer: alice, sha256: {alice}, scopes: [notes:write, notes:read]}}
        - {{consumer: bob, sha256: {bob}, scopes: [notes:read]}}
  token:
    type: jwt
    config:
      algorithms: [RS256, ES256]
      jwks_url: {jwks}
      jwks_min_refresh_s: 0
      issuer: {issuer}
      audience: {audience}
  writers: {{type: authorize, config: {{scopes: [notes:write]}}}}
  admins: {{type: authorize, config: {{consumers: [root]}}}}
  echo: {{type: principal-headers}}
endpoints:
  key-notes:
    path: /keys/notes
    methods: [POST]
    plugins: [writers, keys, echo]
    handler: &mock
      type: mock
      config:
        body: {{marker: {handled}, consumer: "{{header.x-consumer}}", scopes: "{{header.x-scopes}}",
                kind: "{{header.x-kind}}"}}
  key-admin:
    path: /keys/admin
    plugins: [keys, admins]
    handler: *mock
  token-notes:
    path: /token/notes
    methods: [POST]
    plugins: [token, writers, echo]
    handler: *mock
"""


@dataclass
class Api:
    base: str
    jwks: JwksServer

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=10, **kwargs)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``backworks up`` on the blueprint above (once for the module), with a JWKS endpoint on loopback."""
    tmp = tmp_path_factory.mktemp("security")
    (tmp / "local").mkdir()
    (tmp / "local" / "principal_headers.py").write_text(PRINCIPAL_HEADERS)
    with jwks_server(signing_key("e2e-rs"), signing_key("e2e-es", "ES256")) as server:
        text = BLUEPRINT.format(
            alice=digest(ALICE_KEY), bob=digest(BOB_KEY), jwks=server.url, issuer=ISSUER, audience=AUDIENCE,
            handled=HANDLED,
        )  # fmt: skip
        blueprint = write_blueprint(tmp, text)
        port, log = free_port(), tmp / "up.log"
        up = start("up", str(blueprint), "--port", str(port), "--nats-port", str(free_port()), log=log, cwd=tmp)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, timeout=120, process=up, log=log)
            yield Api(base, server)
        finally:
            stop(up, timeout=20)


def stages(response: httpx.Response) -> list[str]:
    return [entry.split(";")[0].strip() for entry in response.headers["server-timing"].split(",")]


def refused(response: httpx.Response, status: int, handler: str) -> dict[str, Any]:
    """The problem document of a refusal that never reached ``handler``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert f"{handler}.request" not in stages(response), stages(response)
    assert HANDLED not in response.text
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    return document


def served(response: httpx.Response, handler: str) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert f"{handler}.request" in stages(response)
    body: dict[str, Any] = response.json()
    assert body["marker"] == HANDLED
    return body


# --- api-key + authorize -------------------------------------------------------------------------------------


def test_a_known_key_with_the_scope_reaches_the_handler_as_its_consumer(api: Api) -> None:
    response = api.post("/keys/notes", headers={"x-api-key": ALICE_KEY})
    body = served(response, "key-notes-handler")
    assert body == {"marker": HANDLED, "consumer": "alice", "scopes": "notes:write notes:read", "kind": "api-key"}
    assert stages(response)[:4] == ["keys.request", "writers.request", "echo.request", "key-notes-handler.request"]
    from_query = served(api.post("/keys/notes", params={"api_key": ALICE_KEY}), "key-notes-handler")
    assert from_query["consumer"] == "alice"


def test_a_missing_key_is_401_with_the_api_key_challenge(api: Api) -> None:
    response = api.post("/keys/notes")
    document = refused(response, 401, "key-notes-handler")
    assert document["detail"] == "missing API key: send it in the 'x-api-key' header or the 'api_key' query parameter"
    assert response.headers["www-authenticate"] == 'ApiKey realm="api", header="x-api-key", query="api_key"'
    assert stages(response)[0] == "keys.request" and "writers.request" not in stages(response)


def test_an_unknown_key_is_401_and_not_echoed(api: Api) -> None:
    response = api.post("/keys/notes", headers={"x-api-key": "guessed-key-123"})
    document = refused(response, 401, "key-notes-handler")
    assert document["detail"] == "unknown API key: it matches none of the keys this API knows"
    assert response.headers["www-authenticate"].startswith("ApiKey ")
    assert "guessed-key-123" not in response.text


def test_a_key_without_the_scope_is_403(api: Api) -> None:
    response = api.post("/keys/notes", headers={"x-api-key": BOB_KEY})
    document = refused(response, 403, "key-notes-handler")
    assert (document["title"], document["detail"]) == ("Forbidden", "missing scope(s): notes:write")
    assert document["missing_scopes"] == ["notes:write"]
    assert "writers.request" in stages(response)


def test_a_consumer_not_listed_is_403(api: Api) -> None:
    document = refused(api.get("/keys/admin", headers={"x-api-key": ALICE_KEY}), 403, "key-admin-handler")
    assert document["detail"] == "consumer 'alice' may not call this endpoint"


# --- jwt (JWKS) + authorize ----------------------------------------------------------------------------------


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def test_a_valid_token_reaches_the_handler_with_scopes_as_a_string_or_a_list(api: Api) -> None:
    body = served(api.post("/token/notes", headers=bearer(token(signing_key("e2e-rs")))), "token-notes-handler")
    assert body == {"marker": HANDLED, "consumer": "alice", "scopes": "notes:read notes:write", "kind": "jwt"}
    listed = token(signing_key("e2e-es", "ES256"), sub="svc-9", scope=["notes:write"])
    body = served(api.post("/token/notes", headers=bearer(listed)), "token-notes-handler")
    assert (body["consumer"], body["scopes"]) == ("svc-9", "notes:write")


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda: token(signing_key("e2e-rs"), exp=int(time.time()) - 60), "token expired"),
        (lambda: token(signing_key("e2e-impostor"), kid="e2e-rs"), "bad signature"),
        (lambda: token(signing_key("e2e-rs"), aud="another-api"), "wrong audience: the token is not for this API"),
        (lambda: token(signing_key("e2e-rs"), iss="https://evil.test"), "wrong issuer"),
        (lambda: unsigned(), "algorithm 'none' is not allowed (allowed: RS256, ES256)"),
        (lambda: "not-a-token", "malformed token"),
        (
            lambda: token(signing_key("e2e-never-published")),
            "token signed with an unknown key (kid 'e2e-never-published')",
        ),
    ],
    ids=["expired", "bad-signature", "audience", "issuer", "alg-none", "malformed", "unknown-kid"],
)
def test_each_bad_token_is_401_with_its_reason(api: Api, make: Any, detail: str) -> None:
    response = api.post("/token/notes", headers=bearer(make()))
    document = refused(response, 401, "token-notes-handler")
    assert document["detail"] == detail
    challenge = response.headers["www-authenticate"]
    assert challenge == f'Bearer realm="api", error="invalid_token", error_description="{detail}"'


def test_a_missing_token_is_401_with_a_bare_bearer_challenge(api: Api) -> None:
    response = api.post("/token/notes")
    document = refused(response, 401, "token-notes-handler")
    assert document["detail"] == "missing token: send it in the 'authorization' header as `Bearer <token>`"
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'


def test_a_rotated_key_is_fetched_from_the_jwks_on_its_first_token(api: Api) -> None:
    rotated = signing_key("e2e-rotated")
    before = api.jwks.fetches
    api.jwks.keys = [*api.jwks.keys, rotated.jwk]
    body = served(api.post("/token/notes", headers=bearer(token(rotated, sub="carol"))), "token-notes-handler")
    assert body["consumer"] == "carol"
    assert api.jwks.fetches > before


def test_a_token_without_the_scope_is_403_with_insufficient_scope(api: Api) -> None:
    reader = token(signing_key("e2e-rs"), scope="notes:read")
    response = api.post("/token/notes", headers=bearer(reader))
    document = refused(response, 403, "token-notes-handler")
    assert document["detail"] == "missing scope(s): notes:write"
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="notes:write"'
    assert json.loads(response.text)["missing_scopes"] == ["notes:write"]
