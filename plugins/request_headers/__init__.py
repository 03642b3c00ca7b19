"""``request-headers``: sets and removes request headers."""

from __future__ import annotations

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Action, Continue, RequestProcessor
from backworks.plugins.request_headers.config import RequestHeadersConfig


class RequestHeaders(RequestProcessor[RequestHeadersConfig]):
    name = "request-headers"
    version = "1.0.0"
    description = "Sets and removes request headers before the handler."
    capabilities = ("headers.request",)
    Config = RequestHeadersConfig

    async def process_request(self, envelope: Envelope) -> Action:
        drop = {name.lower() for name in self.config.remove}
        if drop:
            envelope.headers = [(k, v) for k, v in envelope.headers if k not in drop]
        for name, value in self.config.set.items():
            envelope.set_header(name, value)
        return Continue(envelope)
