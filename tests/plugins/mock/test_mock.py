from __future__ import annotations

import json

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Continue
from backworks.plugins.mock import Mock
from backworks.plugins.mock.config import MockConfig


def request() -> Envelope:
    return Envelope(
        route="r", method="GET", path="/hello/ann", path_params={"name": "ann"},
        query=[("lang", "fr")], headers=[("x-team", "blue")],
    )  # fmt: skip


async def test_templates_path_query_and_header_values() -> None:
    config = MockConfig(
        status=201,
        headers={"x-echo": "{header.x-team}"},
        body={"greeting": "Hello, {path.name}!", "lang": "{query.lang}", "missing": "[{query.nope}]"},
    )
    action = await Mock(config, instance="m").handle(request())
    assert isinstance(action, Continue)
    response = action.envelope.response
    assert response is not None and response.status == 201
    assert json.loads(response.body) == {"greeting": "Hello, ann!", "lang": "fr", "missing": "[]"}
    assert response.header("content-type") == "application/json"
    assert response.header("x-echo") == "blue"


async def test_string_bodies_are_text_and_content_type_can_be_overridden() -> None:
    action = await Mock(MockConfig(body="hi {path.name}"), instance="m").handle(request())
    assert isinstance(action, Continue) and action.envelope.response is not None
    assert action.envelope.response.body == b"hi ann"
    assert action.envelope.response.header("content-type") == "text/plain; charset=utf-8"
    action = await Mock(MockConfig(body="<p/>", content_type="text/html"), instance="m").handle(request())
    assert isinstance(action, Continue) and action.envelope.response is not None
    assert action.envelope.response.header("content-type") == "text/html"
