from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backworks.contracts.blueprint import HTTP_METHODS

DEFAULT_TTL_S = 60
MAX_TTL_S = 86_400
"""A day: the ``bw_cache`` bucket drops any entry older than that (``broker.CACHE_MAX_AGE``)."""


class CacheConfig(BaseModel):
    """A response cache shared by every replica and gateway, in the ``bw_cache`` KV bucket."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: int = Field(
        default=DEFAULT_TTL_S,
        ge=1,
        le=MAX_TTL_S,
        description="Seconds a response stays fresh; a response's `Cache-Control: max-age`/`s-maxage` may shorten it.",
    )
    methods: list[str] = Field(default=["GET", "HEAD"], description="Request methods that are cached.")
    vary: list[str] = Field(
        default=["accept"],  # pydantic copies a mutable default for each instance
        description="Request headers whose values are part of the cache key (besides method, path and query).",
    )
    statuses: list[int] = Field(
        default=[],
        description="Response statuses that are stored; empty: any 2xx.",
    )
    store_set_cookie: bool = Field(
        default=False, description="Store responses that carry `Set-Cookie` (off: they are never shared)."
    )
    per_consumer: bool = Field(
        default=True,
        description="Partition the cache by the authenticated consumer when the request has one (run after auth).",
    )

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        upper = [method.upper() for method in value]
        unknown = [method for method in upper if method not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method(s) {unknown}; use {list(HTTP_METHODS)}")
        return upper

    @field_validator("vary")
    @classmethod
    def _lower_case(cls, value: list[str]) -> list[str]:
        return sorted({name.lower() for name in value})

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        wrong = [status for status in value if not 100 <= status <= 599]
        if wrong:
            raise ValueError(f"not HTTP statuses: {wrong}")
        return value
