"""Config of the ``proxy`` handler (the two time limits are explained on ``ProxyConfig``)."""

from __future__ import annotations

from enum import Enum
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from backworks.pipeline.configs import ConfigContext

DEFAULT_TRY_TIMEOUT_MS = 2000
DEFAULT_RETRIES = 1
DEFAULT_STAGE_TIME_LIMIT = 5.0
"""Seconds the proxy stage may take unless its instance sets ``timeout_ms``: two default tries and some margin."""
EMBEDDED_MAX_PAYLOAD = 8 * 1024 * 1024
"""``max_payload`` of the embedded broker (``backworks.local.embedded.DEFAULT_MAX_PAYLOAD``)."""


class Balance(str, Enum):
    """How the next upstream is chosen among the available targets."""

    ROUND_ROBIN = "round-robin"
    """Each target in turn (weights ignored)."""
    WEIGHTED = "weighted"
    """In proportion to ``weight`` (smooth weighted round robin, as nginx does)."""
    LEAST_PENDING = "least-pending"
    """The target with the fewest requests in flight from this replica, relative to its ``weight``."""


class TargetConfig(BaseModel):
    """One upstream."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL, `http://host:port` or with a path prefix (`http://host:port/api`).")
    weight: int = Field(default=1, ge=1, le=1000, description="Share of traffic with `balance: weighted`.")

    @field_validator("url")
    @classmethod
    def _is_http_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"target URL {value!r} must be http:// or https:// with a host")
        if parts.query or parts.fragment:
            raise ValueError(f"target URL {value!r} must not have a query or fragment")
        return value.rstrip("/")


class PassiveHealth(BaseModel):
    """Outlier detection from live traffic, as Envoy does it: eject a target that keeps failing, for a while."""

    model_config = ConfigDict(extra="forbid")

    consecutive_failures: int = Field(
        default=3, ge=1, description="Failures in a row (5xx, refused connection, timeout) that eject a target."
    )
    base_eject_s: float = Field(
        default=10.0, gt=0, description="First ejection time; the n-th ejection of a target lasts n times this."
    )
    max_eject_s: float = Field(default=300.0, gt=0, description="Longest ejection.")
    max_eject_percent: int = Field(
        default=50, ge=0, le=100, description="Most targets ejected at once (at least one when there are two or more)."
    )


class ActiveHealth(BaseModel):
    """Background health checks: ``GET <target><path>`` every ``interval_s``; 2xx is healthy."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default="/health", description="Path checked on each target.")
    interval_s: float = Field(default=2.0, gt=0, description="Seconds between checks of one target.")
    timeout_ms: int = Field(default=1000, gt=0, description="Time limit of one check.")
    healthy: int = Field(default=2, ge=1, description="Passing checks in a row that bring a target back.")
    unhealthy: int = Field(default=3, ge=1, description="Failing checks in a row that take a target out.")


class RetryBudget(BaseModel):
    """Caps retries to a share of requests over a sliding window, so retries cannot multiply load in an outage."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(default=0.2, ge=0, le=1, description="Retries allowed per request in the window.")
    window_s: float = Field(default=10.0, gt=0, description="Length of the sliding window.")
    min_retries: int = Field(default=3, ge=0, description="Retries always allowed per window (light traffic).")


class ProxyConfig(BaseModel):
    """Forwards the request to one of ``targets`` and answers with its response.

    Two time limits meet here. ``timeout_ms`` (inside ``config``) bounds one try at one upstream; the handler
    instance's own ``timeout_ms`` (next to ``type: proxy``; 5000 ms by default) bounds the whole stage, every try
    included. The stage limit must exceed ``timeout_ms * (1 + retries)``, or the stage would be cut off mid-retry
    and the client would get the pipeline's generic 504 instead of the proxy's own answer naming the upstream:
    ``backworks validate`` refuses such a blueprint. The endpoint's ``timeout_ms`` (5000 ms by default) should in
    turn exceed the stage limit.
    """

    model_config = ConfigDict(extra="forbid")

    targets: list[TargetConfig] = Field(min_length=1, description="Upstreams, e.g. `[{url: http://127.0.0.1:9001}]`.")
    balance: Balance = Field(default=Balance.ROUND_ROBIN, description="How a target is chosen.")
    timeout_ms: int = Field(
        default=DEFAULT_TRY_TIMEOUT_MS, gt=0, description="Time limit of one try (connect, send, read the response)."
    )
    retries: int = Field(
        default=DEFAULT_RETRIES,
        ge=0,
        le=5,
        description="Further tries on another target. A refused connection is retried for any method; a timeout or "
        "a 502/503/504 only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE).",
    )
    retry_budget: RetryBudget = Field(default_factory=RetryBudget, description="Cap on retries.")
    passive_health: PassiveHealth | None = Field(
        default_factory=PassiveHealth, description="Outlier ejection from live traffic; `null` turns it off."
    )
    active_health: ActiveHealth | None = Field(default=None, description="Background health checks; off by default.")
    strip_prefix: str = Field(default="", description="Removed from the start of the path before forwarding.")
    rewrite: str | None = Field(
        default=None, description="Upstream path template, e.g. `/v2/users/{path.id}`; the query string is kept."
    )
    preserve_host: bool = Field(default=False, description="Send the client's Host header instead of the target's.")
    max_response_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest upstream body passed on (larger: 502). Default: what fits in one message of the "
        "embedded broker (8 MiB max_payload, base64 in the envelope, next to the request body); set it when your "
        "NATS server's max_payload differs.",
    )

    @model_validator(mode="after")
    def _tries_fit_the_stage_limit(self, info: ValidationInfo) -> ProxyConfig:
        context = info.context
        if not isinstance(context, ConfigContext) or context.timeout_s is None:
            return self
        tries = 1 + self.retries
        needed_ms = self.timeout_ms * tries
        limit_ms = round(context.timeout_s * 1000)
        if needed_ms >= limit_ms:
            raise PydanticCustomError(
                "proxy_timeouts",
                "timeout_ms {timeout_ms} * {tries} tries = {needed} ms does not fit in the stage's time limit of "
                "{limit} ms: set the handler's own `timeout_ms` (next to `type: proxy`) above {needed}, or lower "
                "`config.timeout_ms` or `config.retries`",
                {"timeout_ms": self.timeout_ms, "tries": tries, "needed": needed_ms, "limit": limit_ms},
            )
        return self
