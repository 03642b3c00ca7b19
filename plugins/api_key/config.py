from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backworks.pipeline.audit import AuditLevel

DEFAULT_HEADER = "x-api-key"
SHA256_HEX = r"^[0-9a-fA-F]{64}$"


class ApiKeyEntry(BaseModel):
    """One caller's key, stored as its SHA-256 digest (``backworks keys hash VALUE`` prints it)."""

    model_config = ConfigDict(extra="forbid")

    consumer: str = Field(min_length=1, description="The caller's name: the principal's `consumer`.")
    sha256: str = Field(
        pattern=SHA256_HEX,
        description="Hex SHA-256 digest of the key (`backworks keys hash VALUE`); the key itself is never stored.",
        json_schema_extra={"secret": True},
    )
    scopes: list[str] = Field(default_factory=list, description="What this caller may do, e.g. `notes:write`.")


class ApiKeyConfig(BaseModel):
    """Where the key is read from and the known keys, as digests."""

    model_config = ConfigDict(extra="forbid")

    header: str | None = Field(
        default=DEFAULT_HEADER, min_length=1, description="Request header carrying the key; null to read only `query`."
    )
    query: str | None = Field(
        default=None, min_length=1, description="Query parameter carrying the key (e.g. `api_key`), if any."
    )
    keys: list[ApiKeyEntry] = Field(
        min_length=1,
        description="The known keys: `{consumer, sha256, scopes}` each. Consumer names and scopes are not secret.",
        json_schema_extra={"secret": False},
    )
    realm: str = Field(default="api", min_length=1, description="Realm named in the `WWW-Authenticate` challenge.")
    hide_credentials: bool = Field(
        default=False, description="Remove the key from the request before later stages and the handler see it."
    )
    audit: AuditLevel = Field(
        default=AuditLevel.ALL,
        description="Decisions published on the event stream (`bw.evt.security.allowed|denied`): all, denied or none.",
    )

    @model_validator(mode="after")
    def _has_a_source(self) -> ApiKeyConfig:
        if self.header is None and self.query is None:
            raise ValueError("set `header` or `query` (or both): where requests carry the key")
        seen: dict[str, str] = {}
        for entry in self.keys:
            digest = entry.sha256.lower()
            if digest in seen:
                raise ValueError(
                    f"consumers {seen[digest]!r} and {entry.consumer!r} have the same key digest: give each its own key"
                )
            seen[digest] = entry.consumer
        return self
