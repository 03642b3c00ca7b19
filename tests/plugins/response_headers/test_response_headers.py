from __future__ import annotations

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.plugin import Continue
from backworks.plugins.response_headers import ResponseHeaders
from backworks.plugins.response_headers.config import ResponseHeadersConfig


async def test_sets_and_removes_response_headers() -> None:
    response = HttpResponse(headers=[("server", "x"), ("content-type", "text/plain")])
    envelope = Envelope(route="r", method="GET", path="/", response=response)
    config = ResponseHeadersConfig(set={"X-Content-Type-Options": "nosniff"}, remove=["server"])
    action = await ResponseHeaders(config, instance="secure").enhance_response(envelope)
    assert isinstance(action, Continue) and action.envelope.response is not None
    assert action.envelope.response.headers == [("content-type", "text/plain"), ("x-content-type-options", "nosniff")]


async def test_no_response_is_left_alone() -> None:
    envelope = Envelope(route="r", method="GET", path="/")
    action = await ResponseHeaders(ResponseHeadersConfig(set={"a": "b"}), instance="s").enhance_response(envelope)
    assert isinstance(action, Continue) and action.envelope.response is None
