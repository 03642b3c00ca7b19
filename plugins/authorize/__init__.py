"""``authorize``: lets a request through only if its authenticated caller has the scopes and/or is a listed consumer.

It reads ``envelope.principal``, set by an authenticating stage (``api-key``, ``jwt``) earlier in the chain: it
requires the ``principal`` capability, so blueprint validation puts that stage before it and refuses a chain
that has none. A request with no principal gets 401; a caller without a required scope, or not among
``consumers``, gets 403 ``application/problem+json`` (for a JWT caller with an RFC 6750 ``insufficient_scope``
challenge).
"""

from __future__ import annotations

from typing import Any

from backworks.contracts.envelope import Envelope
from backworks.contracts.events import SecurityDecision
from backworks.pipeline.audit import record_decision
from backworks.pipeline.capabilities import PRINCIPAL
from backworks.pipeline.plugin import Action, Continue, Respond, Security
from backworks.pipeline.problems import problem
from backworks.plugins.authorize.config import AuthorizeConfig

UNAUTHORIZED = 401
FORBIDDEN = 403
BEARER_KINDS = frozenset({"jwt"})
"""Principal kinds whose callers speak RFC 6750, so a 403 carries a ``Bearer error="insufficient_scope"``."""


class Authorize(Security[AuthorizeConfig]):
    """Answers 403 unless the principal has every required scope and is an allowed consumer."""

    name = "authorize"
    version = "1.0.0"
    description = (
        "Allows a request only when the authenticated caller (from api-key, jwt…) has all `scopes` and/or is "
        "one of `consumers`; 403 problem+json otherwise, 401 when nobody is authenticated."
    )
    capabilities = ("authz.scopes",)
    requires_capabilities = (PRINCIPAL,)
    Config = AuthorizeConfig
    max_execution_time = 0.05

    def __init__(self, config: AuthorizeConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self._consumers = frozenset(config.consumers)
        granted = [f"has scope(s) {', '.join(config.scopes)}"] if config.scopes else []
        granted += ["is a listed consumer"] if config.consumers else []
        self._granted = " and ".join(granted)

    async def authorize(self, envelope: Envelope) -> Action:
        """Continue when the principal may call this endpoint; 401/403 otherwise."""
        principal = envelope.principal
        if principal is None:
            return self._deny(envelope, UNAUTHORIZED, "Unauthorized", "this endpoint needs an authenticated caller")
        if self._consumers and principal.consumer not in self._consumers:
            detail = f"consumer {principal.consumer!r} may not call this endpoint"
            return self._deny(envelope, FORBIDDEN, "Forbidden", detail)
        held = set(principal.scopes)
        missing = [scope for scope in self.config.scopes if scope not in held]
        if missing:
            headers = {}
            if principal.kind in BEARER_KINDS:
                scope = " ".join(self.config.scopes)
                headers["www-authenticate"] = f'Bearer error="insufficient_scope", scope="{scope}"'
            detail = f"missing scope(s): {', '.join(missing)}"
            return self._deny(envelope, FORBIDDEN, "Forbidden", detail, headers=headers, missing_scopes=missing)
        record_decision(envelope, self.name, SecurityDecision.ALLOWED, self._granted, level=self.config.audit)
        return Continue(envelope)

    def _deny(
        self, envelope: Envelope, status: int, title: str, detail: str, headers: dict[str, str] | None = None,
        **members: Any,
    ) -> Respond:  # fmt: skip
        record_decision(envelope, self.name, SecurityDecision.DENIED, detail, level=self.config.audit, status=status)
        return Respond(problem(status, title, detail, headers=headers, **members))
