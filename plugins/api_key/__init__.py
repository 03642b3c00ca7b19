"""``api-key``: authenticates callers by an API key, known only as its SHA-256 digest.

The presented key is hashed and compared with every known digest in constant time (``hmac.compare_digest``,
no early exit), so neither the timing nor the answer tells which key, or how much of one, matched. A request
without a key, or with an unknown one, is answered 401 ``application/problem+json`` with a
``WWW-Authenticate: ApiKey`` challenge; the key is never echoed.
"""

from __future__ import annotations

import hashlib
import hmac

from backworks.contracts.envelope import Envelope, Principal
from backworks.contracts.events import SecurityDecision
from backworks.pipeline.audit import record_decision
from backworks.pipeline.capabilities import PRINCIPAL
from backworks.pipeline.plugin import Action, Continue, Credentials, Respond, Security
from backworks.pipeline.problems import problem
from backworks.plugins.api_key.config import ApiKeyConfig, ApiKeyEntry
from backworks.plugins.carriers import Carrier

PRINCIPAL_KIND = "api-key"
UNAUTHORIZED = 401


def digest(key: str) -> str:
    """The hex SHA-256 digest of a key, as ``keys[].sha256`` stores it (``backworks keys hash``)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(Security[ApiKeyConfig]):
    """Answers 401 unless the request carries a known API key; sets the principal (consumer, scopes)."""

    name = "api-key"
    version = "1.0.0"
    description = (
        "Authenticates callers by an API key from a header and/or query parameter, stored only as a SHA-256 "
        "digest and compared in constant time; sets the principal (consumer, scopes); 401 otherwise."
    )
    capabilities = (PRINCIPAL, "auth.api-key")
    Config = ApiKeyConfig
    max_execution_time = 0.05

    def __init__(self, config: ApiKeyConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self._known: list[tuple[bytes, ApiKeyEntry]] = [(bytes.fromhex(entry.sha256), entry) for entry in config.keys]
        self._carrier = Carrier(config.header, config.query)
        self._challenge = self._build_challenge()

    @classmethod
    def credentials(cls, config: ApiKeyConfig) -> Credentials:
        """The key's header and query parameter: redacted wherever a request is shown."""
        return Carrier(config.header, config.query).credentials()

    def _build_challenge(self) -> str:
        where = [f'realm="{self.config.realm}"']
        if self.config.header:
            where.append(f'header="{self.config.header}"')
        if self.config.query:
            where.append(f'query="{self.config.query}"')
        return "ApiKey " + ", ".join(where)

    def _match(self, key: str) -> ApiKeyEntry | None:
        presented = hashlib.sha256(key.encode()).digest()
        found: ApiKeyEntry | None = None
        for known, entry in self._known:  # every digest is compared: no early exit
            if hmac.compare_digest(presented, known):
                found = entry
        return found

    def _unauthorized(self, envelope: Envelope, detail: str) -> Respond:
        record_decision(
            envelope, self.name, SecurityDecision.DENIED, detail, level=self.config.audit, status=UNAUTHORIZED
        )
        return Respond(problem(UNAUTHORIZED, "Unauthorized", detail, headers={"www-authenticate": self._challenge}))

    async def authenticate(self, envelope: Envelope) -> Action:
        """Set ``envelope.principal`` from the key's entry, or answer 401."""
        key = self._carrier.read(envelope)
        if key is None:
            return self._unauthorized(envelope, f"missing API key: send it in {self._carrier.describe()}")
        entry = self._match(key)
        if entry is None:
            return self._unauthorized(envelope, "unknown API key: it matches none of the keys this API knows")
        envelope.principal = Principal(consumer=entry.consumer, kind=PRINCIPAL_KIND, scopes=list(entry.scopes))
        record_decision(envelope, self.name, SecurityDecision.ALLOWED, "known API key", level=self.config.audit)
        if self.config.hide_credentials:
            self._carrier.hide(envelope)
        return Continue(envelope)
