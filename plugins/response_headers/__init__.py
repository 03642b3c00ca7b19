"""``response-headers``: sets and removes response headers (response phase)."""

from __future__ import annotations

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Action, Continue, ResponseEnhancer
from backworks.plugins.response_headers.config import ResponseHeadersConfig


class ResponseHeaders(ResponseEnhancer[ResponseHeadersConfig]):
    name = "response-headers"
    version = "1.0.0"
    description = "Sets and removes response headers after the handler."
    capabilities = ("headers.response",)
    Config = ResponseHeadersConfig

    async def enhance_response(self, envelope: Envelope) -> Action:
        response = envelope.response
        if response is None:
            return Continue(envelope)
        drop = {name.lower() for name in self.config.remove}
        if drop:
            response.headers = [(k, v) for k, v in response.headers if k not in drop]
        for name, value in self.config.set.items():
            response.set_header(name, value)
        return Continue(envelope)
