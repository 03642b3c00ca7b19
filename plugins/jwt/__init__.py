"""``jwt``: authenticates callers by a signed JSON Web Token (PyJWT), from a secret, a public key or a JWKS.

The token comes from ``Authorization: Bearer …`` by default (``header``/``scheme``/``query`` to change). Its
``alg`` must be one of ``algorithms`` (``none`` never is), its signature must verify with the configured
key (for a JWKS, the key its ``kid`` names), and ``exp``/``nbf``/``iat``, ``iss`` and ``aud`` must hold. A
refused token gets 401 ``application/problem+json`` saying why (expired, bad signature, wrong audience…) and
a ``WWW-Authenticate: Bearer … error="invalid_token"`` challenge, never key material. A valid one sets the
principal: ``consumer`` from ``consumer_claim``, ``scopes`` from ``scopes_claim``, every claim in ``claims``.
"""

from __future__ import annotations

from typing import Any

import jwt
from jwt import PyJWK

from backworks.contracts.envelope import Envelope, Principal
from backworks.contracts.events import SecurityDecision
from backworks.pipeline.audit import record_decision
from backworks.pipeline.capabilities import PRINCIPAL
from backworks.pipeline.plugin import Action, Continue, Credentials, Fail, Health, HealthStatus, Respond, Security
from backworks.pipeline.problems import problem
from backworks.plugins.carriers import Carrier
from backworks.plugins.jwt.config import Algorithm, JwtConfig, read_public_key
from backworks.plugins.jwt.keys import JwksCache, JwksUnavailable, KeyNotFound

PRINCIPAL_KIND = "jwt"
UNAUTHORIZED = 401
MAX_EXECUTION_TIME = 1.5
"""Seconds; verifying takes well under a millisecond, but a key rotation fetches the JWKS (``jwks_timeout_s``)."""

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not valid yet (nbf)"),
    (jwt.InvalidIssuedAtError, "token issued in the future (iat)"),
    (jwt.InvalidAudienceError, "wrong audience: the token is not for this API"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidKeyError, "the token's key does not fit its algorithm"),
    (jwt.DecodeError, "malformed token"),
)
"""PyJWT's errors, most specific first (``InvalidSignatureError`` is a ``DecodeError``), as the client reads them."""


def reason(error: jwt.InvalidTokenError) -> str:
    """Why a token was refused, for the client: never the token, the key or PyJWT's internals."""
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token has no {error.claim!r} claim"
    for kind, text in _REASONS:
        if isinstance(error, kind):
            return text
    return "invalid token"


def scopes_of(value: Any) -> list[str]:
    """Scopes from a claim: a space-separated string (OAuth 2.0) or a list."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(item) for item in value]
    return []


class Jwt(Security[JwtConfig]):
    """Answers 401 unless the request carries a valid JWT; sets the principal from its claims."""

    name = "jwt"
    version = "1.0.0"
    description = (
        "Authenticates callers by a JSON Web Token (HS*, RS*, PS*, ES*, EdDSA; never `none`) verified with a "
        "secret, a PEM public key or a cached JWKS refreshed on unknown `kid`; checks exp/nbf/iss/aud; sets the "
        "principal (consumer, scopes, claims); 401 with the reason otherwise."
    )
    capabilities = (PRINCIPAL, "auth.jwt")
    Config = JwtConfig
    max_execution_time = MAX_EXECUTION_TIME

    def __init__(self, config: JwtConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self._allowed = [algorithm.value for algorithm in config.algorithms]
        self._static: str | bytes | None = None
        if config.secret is not None:
            self._static = config.secret.get_secret_value().encode()
        elif config.public_key is not None:
            self._static = read_public_key(config.public_key)
        self._jwks = (
            JwksCache(
                config.jwks_url,
                cache_s=config.jwks_cache_s,
                min_refresh_s=config.jwks_min_refresh_s,
                timeout_s=config.jwks_timeout_s,
            )
            if config.jwks_url
            else None
        )
        self._scheme = config.effective_scheme
        self._carrier = Carrier(config.header, config.query)
        self._audience: str | list[str] | None = config.audience
        self.refused = 0

    @classmethod
    def credentials(cls, config: JwtConfig) -> Credentials:
        """The token's header and query parameter: redacted wherever a request is shown."""
        return Carrier(config.header, config.query).credentials()

    async def startup(self) -> None:
        """Fetch the JWKS (when configured) before the first request."""
        if self._jwks is not None:
            await self._jwks.start()

    async def shutdown(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def health_check(self) -> Health:
        """Degraded while a JWKS is configured but no key from it is held."""
        if self._jwks is not None and self._jwks.held == 0:
            return Health(
                status=HealthStatus.DEGRADED,
                message=f"no keys from {self._jwks.url}: {self._jwks.last_error or 'not fetched yet'}",
            )
        return Health()

    async def get_metrics(self) -> dict[str, float]:
        figures = {"tokens_refused": float(self.refused)}
        if self._jwks is not None:
            figures.update(jwks_fetches=float(self._jwks.fetches), jwks_keys=float(self._jwks.held))
        return figures

    def _challenge(self, error: str | None = None) -> str:
        parts = [f'realm="{self.config.realm}"']
        if error is not None:
            parts += ['error="invalid_token"', f'error_description="{error.replace(chr(34), chr(39))}"']
        return "Bearer " + ", ".join(parts)

    def _unauthorized(self, envelope: Envelope, detail: str, *, missing: bool = False) -> Respond:
        self.refused += 1
        record_decision(
            envelope, self.name, SecurityDecision.DENIED, detail, level=self.config.audit, status=UNAUTHORIZED
        )
        challenge = self._challenge(None if missing else detail)
        return Respond(problem(UNAUTHORIZED, "Unauthorized", detail, headers={"www-authenticate": challenge}))

    def _token(self, envelope: Envelope) -> tuple[str | None, str | None]:
        """The token, or why the request has none (a detail for the 401)."""
        if self.config.header:
            value = envelope.header(self.config.header)
            if value:
                if self._scheme is None:
                    return value.strip(), None
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() == self._scheme.lower() and token.strip():
                    return token.strip(), None
                if not self.config.query or not envelope.query_param(self.config.query):
                    return None, f"the {self.config.header!r} header is not `{self._scheme} <token>`"
        if self.config.query:
            value = envelope.query_param(self.config.query)
            if value:
                return value, None
        shape = f" as `{self._scheme} <token>`" if self._scheme else ""
        return None, f"missing token: send it in {self._carrier.describe(shape)}"

    async def _key(self, kid: str | None) -> str | bytes | PyJWK:
        if self._jwks is not None:
            return await self._jwks.key(kid)
        assert self._static is not None  # config validation: exactly one key source
        return self._static

    async def authenticate(self, envelope: Envelope) -> Action:
        """Verify the token and set ``envelope.principal``, or answer 401 with the reason."""
        token, missing = self._token(envelope)
        if token is None:
            return self._unauthorized(envelope, missing or "missing token", missing=True)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            return self._unauthorized(envelope, "malformed token")
        algorithm = header.get("alg")
        if algorithm not in self._allowed:
            allowed = ", ".join(self._allowed)
            return self._unauthorized(envelope, f"algorithm {algorithm!r} is not allowed (allowed: {allowed})")
        kid = header.get("kid")
        try:
            key = await self._key(kid if isinstance(kid, str) else None)
        except KeyNotFound as exc:
            return self._unauthorized(envelope, str(exc))
        except JwksUnavailable as exc:
            return Fail(f"cannot verify tokens: {exc}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": self.config.required_claims, "verify_aud": self._audience is not None},
            )
        except jwt.InvalidTokenError as exc:
            return self._unauthorized(envelope, reason(exc))
        consumer = claims.get(self.config.consumer_claim)
        if not isinstance(consumer, (str, int)) or isinstance(consumer, bool) or consumer == "":
            return self._unauthorized(envelope, f"token has no {self.config.consumer_claim!r} claim naming the caller")
        envelope.principal = Principal(
            consumer=str(consumer),
            kind=PRINCIPAL_KIND,
            scopes=scopes_of(claims.get(self.config.scopes_claim)),
            claims=claims,
        )
        record_decision(envelope, self.name, SecurityDecision.ALLOWED, "valid token", level=self.config.audit)
        if self.config.hide_credentials:
            self._carrier.hide(envelope)
        return Continue(envelope)


__all__ = ["Algorithm", "Jwt", "JwtConfig"]
