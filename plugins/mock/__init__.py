"""``mock``: answers with a configured response, templated from the request."""

from __future__ import annotations

import json

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.plugin import Action, Continue, Handler
from backworks.pipeline.templates import render, render_value
from backworks.plugins.mock.config import MockConfig


class Mock(Handler[MockConfig]):
    name = "mock"
    version = "1.0.0"
    description = "Answers with a configured status, headers and body, templated from the request."
    capabilities = ("respond.static", "templating")
    Config = MockConfig

    async def handle(self, envelope: Envelope) -> Action:
        config = self.config
        body = config.body
        if body is None:
            payload, content_type = b"", None
        elif isinstance(body, str):
            payload, content_type = render(body, envelope).encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(render_value(body, envelope)).encode(), "application/json"
        response = HttpResponse(status=config.status, body=payload)
        for name, value in config.headers.items():
            response.set_header(name, render(value, envelope))
        content_type = config.content_type or content_type
        if content_type and response.header("content-type") is None:
            response.set_header("content-type", content_type)
        envelope.response = response
        return Continue(envelope)
