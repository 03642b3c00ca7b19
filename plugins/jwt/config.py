from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from backworks.pipeline.audit import AuditLevel
from backworks.pipeline.files import read_text

DEFAULT_HEADER = "authorization"
DEFAULT_SCHEME = "Bearer"
"""The token's scheme in the ``Authorization`` header (RFC 6750); another header carries the bare token."""
DEFAULT_JWKS_CACHE_S = 300.0
DEFAULT_JWKS_MIN_REFRESH_S = 30.0
DEFAULT_JWKS_TIMEOUT_S = 1.0
FILE_PREFIX = "file:"
PEM_MARKER = "-----BEGIN"


class Algorithm(str, Enum):
    """A JWS algorithm a token may be signed with (``none`` is never accepted)."""

    HS256 = "HS256"
    """HMAC with SHA-256 (shared `secret`)."""
    HS384 = "HS384"
    """HMAC with SHA-384 (shared `secret`)."""
    HS512 = "HS512"
    """HMAC with SHA-512 (shared `secret`)."""
    RS256 = "RS256"
    """RSASSA-PKCS1-v1_5 with SHA-256 (public key)."""
    RS384 = "RS384"
    """RSASSA-PKCS1-v1_5 with SHA-384 (public key)."""
    RS512 = "RS512"
    """RSASSA-PKCS1-v1_5 with SHA-512 (public key)."""
    PS256 = "PS256"
    """RSASSA-PSS with SHA-256 (public key)."""
    PS384 = "PS384"
    """RSASSA-PSS with SHA-384 (public key)."""
    PS512 = "PS512"
    """RSASSA-PSS with SHA-512 (public key)."""
    ES256 = "ES256"
    """ECDSA P-256 with SHA-256 (public key)."""
    ES384 = "ES384"
    """ECDSA P-384 with SHA-384 (public key)."""
    ES512 = "ES512"
    """ECDSA P-521 with SHA-512 (public key)."""
    EDDSA = "EdDSA"
    """Ed25519/Ed448 (public key)."""

    @property
    def symmetric(self) -> bool:
        """True for the HMAC algorithms, verified with the shared secret."""
        return self.value.startswith("HS")


def read_public_key(value: str) -> str:
    """The PEM text of ``public_key``: inline, or read from ``file:PATH`` (relative to the working directory)."""
    if value.startswith(FILE_PREFIX):
        path = Path(value[len(FILE_PREFIX) :]).expanduser()
        try:
            return path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read public key file {str(path)!r}: {exc.strerror or exc}") from None
    return value


class JwtConfig(BaseModel):
    """Which tokens are valid (algorithms, key, issuer, audience) and where they come from."""

    model_config = ConfigDict(extra="forbid")

    algorithms: list[Algorithm] = Field(
        min_length=1, description="Algorithms a token may be signed with, e.g. `[RS256]`; `none` is never accepted."
    )
    secret: SecretStr | None = Field(default=None, description="Shared secret for HS256/HS384/HS512.")
    secret_file: str | None = Field(
        default=None,
        description="File holding the shared secret instead of `secret` (relative to the blueprint's folder; "
        "surrounding whitespace is stripped), so the secret itself need not be in the blueprint.",
        json_schema_extra={"secret": False},
    )
    public_key: str | None = Field(
        default=None,
        description="PEM public key for RS/PS/ES/EdDSA, inline or `file:PATH` (relative to the working directory).",
        json_schema_extra={"secret": False},
    )
    jwks_url: str | None = Field(
        default=None,
        description="http(s) URL of a JSON Web Key Set: fetched at startup, cached, and fetched again when a "
        "token names an unknown `kid` (at most once per `jwks_min_refresh_s`).",
    )
    issuer: str | None = Field(default=None, description="Required `iss` claim, if set.")
    audience: str | list[str] | None = Field(
        default=None, description="Accepted `aud` value(s), if set: the token's `aud` must contain one."
    )
    leeway_s: float = Field(default=0.0, ge=0, description="Clock skew allowed for `exp`, `nbf` and `iat`, seconds.")
    required_claims: list[str] = Field(
        default=["exp"], description="Claims every token must have; `[]` to accept tokens that never expire."
    )
    consumer_claim: str = Field(default="sub", min_length=1, description="Claim naming the caller (the consumer).")
    scopes_claim: str = Field(
        default="scope", min_length=1, description="Claim with the caller's scopes: a space-separated string or a list."
    )
    header: str | None = Field(
        default=DEFAULT_HEADER, min_length=1, description="Request header carrying the token; null to use only `query`."
    )
    scheme: str | None = Field(
        default=None,
        description="Scheme before the token in `header`. Default: `Bearer` for `Authorization`, none for any other.",
    )
    query: str | None = Field(default=None, min_length=1, description="Query parameter carrying the token, if any.")
    realm: str = Field(default="api", min_length=1, description="Realm named in the `WWW-Authenticate` challenge.")
    hide_credentials: bool = Field(
        default=False, description="Remove the token from the request before later stages and the handler see it."
    )
    audit: AuditLevel = Field(
        default=AuditLevel.ALL,
        description="Decisions published on the event stream (`bw.evt.security.allowed|denied`): all, denied or none.",
    )
    jwks_cache_s: float = Field(
        default=DEFAULT_JWKS_CACHE_S, gt=0, description="Seconds a fetched key set is used before it is fetched again."
    )
    jwks_min_refresh_s: float = Field(
        default=DEFAULT_JWKS_MIN_REFRESH_S,
        ge=0,
        description="Least seconds between two fetches of the key set, so tokens with made-up `kid`s cannot "
        "flood the JWKS endpoint.",
    )
    jwks_timeout_s: float = Field(default=DEFAULT_JWKS_TIMEOUT_S, gt=0, description="Timeout of one JWKS fetch.")

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(
                f"jwks_url {value!r} is not an http(s) URL, e.g. https://idp.example/.well-known/jwks.json"
            )
        return value

    @field_validator("secret_file")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The file's absolute path, once it is known to be readable (its text is read after, into ``secret``)."""
        if value is None:
            return None
        path, _ = read_text(value, info)
        return str(path)

    @field_validator("public_key")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        text = read_public_key(value)
        if PEM_MARKER not in text:
            raise ValueError(
                "not a PEM public key (expected '-----BEGIN PUBLIC KEY-----'); use inline PEM or file:PATH"
            )
        try:
            load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ValueError(f"not a valid PEM public key: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        if self.secret_file is not None:
            if self.secret is not None:
                raise ValueError("set `secret` or `secret_file`, not both")
            self.secret = SecretStr(Path(self.secret_file).read_text(encoding="utf-8").strip())
        sources = [name for name in ("secret", "public_key", "jwks_url") if getattr(self, name) is not None]
        if len(sources) != 1:
            given = ", ".join(sources) or "none"
            raise ValueError(f"set exactly one of `secret`, `public_key` or `jwks_url` (given: {given})")
        symmetric = {a.value for a in self.algorithms if a.symmetric}
        asymmetric = {a.value for a in self.algorithms if not a.symmetric}
        if symmetric and asymmetric:
            raise ValueError(
                f"`algorithms` mixes HMAC ({', '.join(sorted(symmetric))}) and public-key "
                f"({', '.join(sorted(asymmetric))}) algorithms: one key source serves only one kind; use two "
                "jwt instances if you must accept both"
            )
        if symmetric and self.secret is None:
            raise ValueError(f"{', '.join(sorted(symmetric))} need `secret` (the shared HMAC secret)")
        if symmetric and self.secret is not None:
            strongest = max(symmetric, key=lambda name: int(name[2:]))
            needed = int(strongest[2:]) // 8
            if len(self.secret.get_secret_value().encode()) < needed:
                raise ValueError(
                    f"`secret` is too short for {strongest}: use at least {needed} random bytes (RFC 7518 section 3.2)"
                )
        if asymmetric and self.secret is not None:
            raise ValueError(f"{', '.join(sorted(asymmetric))} need `public_key` or `jwks_url`, not `secret`")
        if self.header is None and self.query is None:
            raise ValueError("set `header` or `query` (or both): where requests carry the token")
        return self

    @property
    def effective_scheme(self) -> str | None:
        """The scheme the token follows in ``header`` (``Bearer`` for Authorization unless set)."""
        if self.scheme is not None:
            return self.scheme or None
        return DEFAULT_SCHEME if (self.header or "").lower() == DEFAULT_HEADER else None
