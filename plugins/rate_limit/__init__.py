"""``rate-limit``: a sliding-window limit per caller, held fleet-wide through NATS KV.

The request phase admits or rejects (429 problem+json with ``Retry-After``); the response phase puts the
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` and ``RateLimit-Policy`` headers on every
response of the route, the handler's and the 429 alike. How the limit holds across replicas: ``budget``;
the window: ``window``.
"""

from __future__ import annotations

import asyncio

import structlog

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.contracts.names import RATELIMIT_BUCKET
from backworks.pipeline.errors import StoreUnavailable
from backworks.pipeline.plugin import Action, Continue, RequestProcessor, Respond
from backworks.pipeline.problems import problem
from backworks.pipeline.stores import digest
from backworks.plugins.rate_limit.budget import Decision, FleetBudget
from backworks.plugins.rate_limit.config import By, OnError, RateLimitConfig
from backworks.plugins.rate_limit.window import SlidingWindow, whole_seconds

log = structlog.get_logger("backworks.plugins.rate_limit")

ANNOTATION = "rate_limit"
"""``envelope.annotations[ANNOTATION][instance]``: the request phase's decision, for the response phase's headers."""
ERROR_LOG_EVERY = 100
"""While KV is unreachable, log the first failure and then one in this many."""
UNAVAILABLE_RETRY_AFTER = "1"
DECISION_SHARE = 0.8
"""Share of ``max_execution_time`` the decision may take before ``on_error`` applies."""


def policy(limit: int, window_s: float) -> str:
    """``RateLimit-Policy`` value, e.g. ``5;w=60``."""
    return f"{limit};w={int(window_s) if float(window_s).is_integer() else window_s}"


class RateLimit(RequestProcessor[RateLimitConfig]):
    """At most ``limit`` requests per ``window_s`` seconds per caller, held across every replica and gateway.

    A sliding window (no 2N burst at a window boundary) whose budget lives in the ``bw_ratelimit`` KV bucket:
    replicas lease small chunks of it with compare-and-set and admit from their chunk, so the fleet never admits
    more than ``limit`` in any window. Rejected requests consume nothing. Put it after the authentication plugin
    when limiting ``by: consumer``, and before ``cache`` to count cache hits too.
    """

    name = "rate-limit"
    version = "1.0.0"
    description = "Fleet-wide sliding-window rate limit per consumer, IP or header, with RateLimit-* headers."
    capabilities = ("rate-limit",)
    max_execution_time = 1.0  # a lease may lose a few compare-and-sets under contention on a loaded host
    Config = RateLimitConfig

    budget: FleetBudget
    errors = 0

    async def startup(self) -> None:
        store = await self.kv(RATELIMIT_BUCKET)
        self.window = SlidingWindow(self.config.limit, self.config.window_s)
        self.budget = FleetBudget(self.window, store)
        self.budget.start()
        self.allowed = 0
        self.rejected = 0

    async def shutdown(self) -> None:
        await self.budget.stop()

    def caller(self, envelope: Envelope) -> str:
        """The store key of the budget this request draws on (a digest: any consumer, IP or header value fits)."""
        config = self.config
        if config.by is By.CONSUMER and envelope.principal is not None:
            return digest("consumer", envelope.principal.consumer)
        if config.by is By.HEADER and config.header:
            value = envelope.header(config.header)
            if value is not None:
                return digest("header", config.header, value)
        return digest("ip", envelope.client or "unknown")

    async def process_request(self, envelope: Envelope) -> Action:
        try:
            # Decide within the plugin's own time, so that on_error (not the executor's skip) applies when KV is slow.
            async with asyncio.timeout(self.max_execution_time * DECISION_SHARE):
                decision = await self.budget.admit(self.caller(envelope))
        except (StoreUnavailable, TimeoutError) as exc:
            return self._unavailable(envelope, exc)
        envelope.annotations.setdefault(ANNOTATION, {})[self.instance] = {
            "limit": decision.limit,
            "remaining": decision.remaining,
            "reset": whole_seconds(decision.reset_s),
        }
        if decision.allowed:
            self.allowed += 1
            return Continue(envelope)
        self.rejected += 1
        return Respond(self._too_many(decision))

    async def process_response(self, envelope: Envelope) -> Action:
        record = envelope.annotations.get(ANNOTATION, {}).get(self.instance)
        response = envelope.response
        if record is None or response is None:
            return Continue(envelope)
        shown = response.header("ratelimit-remaining")
        # Several limiters on one route: the response shows the one closest to refusing.
        if shown is None or not shown.isdigit() or record["remaining"] <= int(shown):
            self._set_headers(response, record["limit"], record["remaining"], record["reset"])
        return Continue(envelope)

    def _set_headers(self, response: HttpResponse, limit: int, remaining: int, reset: int) -> None:
        response.set_header("ratelimit-limit", str(limit))
        response.set_header("ratelimit-remaining", str(remaining))
        response.set_header("ratelimit-reset", str(reset))
        response.set_header("ratelimit-policy", policy(limit, self.config.window_s))

    def _too_many(self, decision: Decision) -> HttpResponse:
        retry_after = whole_seconds(decision.retry_after_s, minimum=1)
        config = self.config
        response = problem(
            429,
            "Too Many Requests",
            f"rate limit of {config.limit} requests per {policy(config.limit, config.window_s).split('=')[1]} s "
            f"exceeded (limited by {config.by.value}); retry in {retry_after} s",
            headers={"retry-after": str(retry_after)},
        )
        self._set_headers(response, decision.limit, 0, whole_seconds(decision.reset_s))
        return response

    def _unavailable(self, envelope: Envelope, exc: Exception) -> Action:
        self.errors += 1
        if self.errors % ERROR_LOG_EVERY == 1:
            log.warning(
                "rate-limit state unreachable",
                instance=self.instance,
                on_error=self.config.on_error.value,
                failures=self.errors,
                error=str(exc) or type(exc).__name__,
            )
        if self.config.on_error is OnError.ALLOW:
            return Continue(envelope)
        return Respond(
            problem(
                503,
                "Service Unavailable",
                "the rate limiter cannot reach its shared state (NATS KV) and is configured with on_error: deny",
                headers={"retry-after": UNAVAILABLE_RETRY_AFTER},
            )
        )

    async def get_metrics(self) -> dict[str, float]:
        budget = getattr(self, "budget", None)
        if budget is None:
            return {}
        return {
            "allowed": float(self.allowed),
            "rejected": float(self.rejected),
            "kv_errors": float(self.errors),
            "cas_writes": float(budget.cas_writes),
            "cas_conflicts": float(budget.cas_conflicts),
            "leases": float(budget.leases),
            "callers": float(len(budget.keys)),
        }
