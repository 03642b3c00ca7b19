"""Where an authenticating plugin reads its credential: a request header and/or a query parameter.

``api-key`` and ``jwt`` both take ``header:`` and ``query:``; this is the one place that declares them for
redaction, describes them to a client that sent nothing, and removes them (``hide_credentials``).
"""

from __future__ import annotations

from dataclasses import dataclass

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Credentials


@dataclass(frozen=True)
class Carrier:
    """A credential's header (any case) and query parameter; either may be absent, not both."""

    header: str | None
    query: str | None

    def credentials(self) -> Credentials:
        """Both names, so that logs, events and problem documents redact them."""
        return Credentials(headers=(self.header,) if self.header else (), query=(self.query,) if self.query else ())

    def read(self, envelope: Envelope) -> str | None:
        """The credential as sent: the header's value, else the query parameter's (empty counts as absent)."""
        if self.header and (value := envelope.header(self.header)):
            return value
        if self.query and (value := envelope.query_param(self.query)):
            return value
        return None

    def describe(self, header_format: str = "") -> str:
        """Where a client should send it: ``the 'x-api-key' header or the 'api_key' query parameter``."""
        places = []
        if self.header:
            places.append(f"the {self.header!r} header{header_format}")
        if self.query:
            places.append(f"the {self.query!r} query parameter")
        return " or ".join(places)

    def hide(self, envelope: Envelope) -> None:
        """Remove the credential, so that later stages and the handler (or an upstream) never see it."""
        if self.header:
            name = self.header.lower()
            envelope.headers = [(k, v) for k, v in envelope.headers if k != name]
        if self.query:
            envelope.query = [(k, v) for k, v in envelope.query if k != self.query]
