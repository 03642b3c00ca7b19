from __future__ import annotations

import json
from typing import Any

import pytest

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.configs import validate_config
from backworks.pipeline.plugin import Continue, Respond
from backworks.plugins.cors import Cors
from backworks.plugins.cors.config import CorsConfig
from backworks.plugins.cors.origins import parse_origin

APP = "https://app.example.com"


def cors(**config: Any) -> Cors:
    model, problems = validate_config(CorsConfig, config)
    assert model is not None, problems
    assert isinstance(model, CorsConfig)
    return Cors(model, instance="cors")


def preflight(origin: str = APP, method: str = "PUT", headers: str | None = None) -> Envelope:
    pairs = [("origin", origin), ("access-control-request-method", method)]
    if headers is not None:
        pairs.append(("access-control-request-headers", headers))
    return Envelope(route="r", method="OPTIONS", path="/notes", headers=pairs)


async def answer(plugin: Cors, envelope: Envelope) -> HttpResponse:
    action = await plugin.process_request(envelope)
    assert isinstance(action, Respond), "a preflight is always answered by cors"
    return action.response


async def actual(plugin: Cors, origin: str | None, response: HttpResponse | None = None) -> HttpResponse:
    """An actual request through both phases; the handler's ``response`` in between."""
    envelope = Envelope(route="r", method="GET", path="/notes", headers=[("origin", origin)] if origin else [])
    action = await plugin.process_request(envelope)
    assert isinstance(action, Continue)
    envelope = action.envelope
    envelope.response = response or HttpResponse(status=200, headers=[("content-type", "application/json")])
    back = await plugin.process_response(envelope)
    assert isinstance(back, Continue) and back.envelope.response is not None
    return back.envelope.response


def cors_headers(response: HttpResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers if k.startswith("access-control-")}


async def test_preflight_from_an_allowed_origin_is_204_with_the_allow_headers() -> None:
    plugin = cors(
        allow_origins=[APP], allow_methods=["GET", "PUT"], allow_headers=["content-type", "x-trace"], max_age_s=120
    )
    response = await answer(plugin, preflight(headers="Content-Type, X-Trace"))
    assert response.status == 204 and response.body == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "content-type, x-trace",
        "access-control-max-age": "120",
    }
    assert response.header("vary") == "origin, access-control-request-method, access-control-request-headers"


@pytest.mark.parametrize(
    ("envelope", "detail"),
    [
        (preflight(origin="https://evil.example"), "origin 'https://evil.example' is not allowed"),
        (preflight(method="DELETE"), "method 'DELETE' is not allowed cross-origin; allowed: GET, PUT"),
        (preflight(headers="content-type, x-secret"), "request header(s) x-secret not allowed"),
    ],
)
async def test_a_disallowed_preflight_is_403_problem_json_without_allow_headers(
    envelope: Envelope, detail: str
) -> None:
    plugin = cors(allow_origins=[APP], allow_methods=["GET", "PUT"], allow_headers=["content-type"])
    response = await answer(plugin, envelope)
    assert response.status == 403
    assert response.header("content-type") == "application/problem+json"
    body = json.loads(response.body)
    assert body["title"] == "CORS preflight refused" and detail in body["detail"]
    assert cors_headers(response) == {}
    assert "origin" in (response.header("vary") or "")


async def test_credentials_echo_the_origin_and_wildcards_echo_what_was_asked() -> None:
    plugin = cors(
        allow_origins=["https://*.example.com"],
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        max_age_s=None,
    )
    response = await answer(plugin, preflight(origin=APP, method="PATCH", headers="authorization, x-custom"))
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "PATCH",
        "access-control-allow-headers": "authorization, x-custom",
    }


async def test_any_origin_without_credentials_answers_star() -> None:
    response = await answer(cors(), preflight(origin="https://anyone.test", method="POST"))
    assert response.status == 204
    assert response.header("access-control-allow-origin") == "*"


async def test_actual_request_from_an_allowed_origin_gets_origin_credentials_and_exposed_headers() -> None:
    plugin = cors(allow_origins=[APP], allow_credentials=True, expose_headers=["X-Total", "ETag"])
    response = await actual(plugin, APP, HttpResponse(headers=[("vary", "accept")]))
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total, etag",
    }
    assert response.header("vary") == "accept, origin"


async def test_actual_request_from_a_disallowed_origin_is_served_without_cors_headers() -> None:
    plugin = cors(allow_origins=[APP])
    handler_says = HttpResponse(headers=[("access-control-allow-origin", "*"), ("x-kept", "1")])
    response = await actual(plugin, "https://evil.example", handler_says)
    assert response.status == 200
    assert cors_headers(response) == {}, "cors owns the CORS headers: the handler's * is removed"
    assert response.header("x-kept") == "1"
    assert response.header("vary") == "origin"


async def test_a_request_without_origin_still_varies_on_origin() -> None:
    response = await actual(cors(allow_origins=[APP]), None)
    assert cors_headers(response) == {}
    assert response.header("vary") == "origin"


async def test_the_decision_is_taken_on_the_request_as_it_arrived() -> None:
    plugin = cors(allow_origins=[APP])
    envelope = Envelope(route="r", method="GET", path="/", headers=[("origin", APP)])
    action = await plugin.process_request(envelope)
    assert isinstance(action, Continue)
    action.envelope.headers = []  # a later stage drops the Origin header
    action.envelope.response = HttpResponse()
    back = await plugin.process_response(action.envelope)
    assert isinstance(back, Continue) and back.envelope.response is not None
    assert back.envelope.response.header("access-control-allow-origin") == APP


async def test_its_own_preflight_answer_is_left_alone_in_the_response_phase() -> None:
    plugin = cors(allow_origins=[APP])
    envelope = preflight()
    envelope.response = await answer(plugin, envelope)
    before = list(envelope.response.headers)
    back = await plugin.process_response(envelope)
    assert isinstance(back, Continue) and back.envelope.response is not None
    assert back.envelope.response.headers == before


@pytest.mark.parametrize(
    ("entry", "origin", "allowed"),
    [
        ("https://*.example.com", "https://a.example.com", True),
        ("https://*.example.com", "https://a.b.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://evil-example.com", False),
        ("https://*.example.com", "https://a.example.com.evil.test", False),
        ("https://*.example.com", "http://a.example.com", False),
        ("https://*.example.com", "https://a.exampleXcom", False),  # the dot is literal, not a regex wildcard
        ("http://localhost:*", "http://localhost:3000", True),
        ("http://localhost:*", "http://localhost", True),
        ("http://localhost:*", "http://localhost.evil.test", False),
        ("https://App.Example.com:443/", "https://app.example.com", True),
        ("https://app.example.com:8443", "https://app.example.com", False),
        ("null", "null", True),
    ],
)
def test_origin_patterns_are_anchored_and_literal(entry: str, origin: str, allowed: bool) -> None:
    assert parse_origin(entry).matches(origin) is allowed


@pytest.mark.parametrize(
    "entry",
    [
        "https://a.*.com",
        "https://ex*ample.com",
        "app.example.com",
        "https://x.com/path",
        "https://(a|b).com",
        "*.example.com",
    ],
)
def test_an_origin_entry_outside_the_syntax_is_refused_at_load(entry: str) -> None:
    model, problems = validate_config(CorsConfig, {"allow_origins": [entry]})
    assert model is None
    assert problems[0].path == ("allow_origins", 0) and "is not an origin" in problems[0].message


def test_credentials_with_any_origin_are_refused_at_load() -> None:
    model, problems = validate_config(CorsConfig, {"allow_credentials": True})
    assert model is None
    assert problems[0].path == ("allow_credentials",)
    assert "list the origins" in problems[0].message
