from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_WINDOW_S = 60.0
MIN_WINDOW_S = 1.0
MAX_WINDOW_S = 86_400.0
"""A day: the ``bw_ratelimit`` bucket keeps a key for two (``broker.RATELIMIT_MAX_AGE``)."""


class By(str, Enum):
    """Whose requests share one budget."""

    CONSUMER = "consumer"
    """The authenticated consumer (``envelope.principal``); requests without one are limited by client IP."""
    IP = "ip"
    """The client IP address."""
    HEADER = "header"
    """The value of the request header named by ``header``; requests without it are limited by client IP."""


class OnError(str, Enum):
    """What to do with a request when the shared budget (NATS KV) cannot be reached."""

    ALLOW = "allow"
    """Fail open: let the request through, without ``RateLimit-*`` headers."""
    DENY = "deny"
    """Fail closed: answer 503 problem+json with ``Retry-After: 1``."""


class RateLimitConfig(BaseModel):
    """At most ``limit`` requests per ``window_s`` seconds per caller, across every replica and gateway."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(ge=1, le=10_000_000, description="Requests allowed per window and caller.")
    window_s: float = Field(
        default=DEFAULT_WINDOW_S,
        ge=MIN_WINDOW_S,
        le=MAX_WINDOW_S,
        description="Length of the sliding window, in seconds. No interval this long ever holds more than `limit`.",
    )
    by: By = Field(default=By.CONSUMER, description="Whose requests share a budget: consumer, ip or header.")
    header: str | None = Field(
        default=None,
        description="With `by: header`: the request header whose value names the caller (e.g. x-tenant).",
    )
    on_error: OnError = Field(
        default=OnError.ALLOW,
        description="When NATS KV cannot be reached: allow (fail open) or deny (503). With deny, also mark the "
        "instance `critical: true` so that a stage that cannot run fails the request too.",
    )

    @model_validator(mode="after")
    def _header_named(self) -> RateLimitConfig:
        if self.by is By.HEADER and not self.header:
            raise ValueError("`by: header` needs `header:` naming the request header (e.g. header: x-tenant)")
        if self.header is not None:
            self.header = self.header.lower()
        return self
