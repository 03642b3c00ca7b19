"""``proxy``: forwards each request to one of several upstreams (httpx, pooled connections) and answers with
its response; balancing, retries under a budget, passive ejection and active health checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import httpx
import structlog

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Action, Continue, Handler, Health, HealthStatus, Respond
from backworks.pipeline.problems import problem
from backworks.plugins.proxy.budget import RetryBudget
from backworks.plugins.proxy.config import DEFAULT_STAGE_TIME_LIMIT, EMBEDDED_MAX_PAYLOAD, ActiveHealth, ProxyConfig
from backworks.plugins.proxy.forwarding import request_headers, upstream_path
from backworks.plugins.proxy.tries import Try, attempt
from backworks.plugins.proxy.upstreams import Upstream, Upstreams

__all__ = ["Proxy"]

log = structlog.get_logger("backworks.plugins.proxy")

ENVELOPE_MARGIN = 256 * 1024
"""Bytes of a broker message kept for the envelope around the bodies (headers, itinerary, timings)."""
MAX_IDLE_CONNECTIONS = 100
"""Idle keep-alive connections one replica keeps to all targets together. Open connections are not capped here:
the stage's in-flight limit (``limits.max_concurrent``) already bounds them, and a local pool wait must not count
as a target's failure."""


def response_limit(request_body: int) -> int:
    """Largest response body that fits in one embedded-broker message next to a request body of that size.

    Both bodies travel base64-encoded (4 bytes for every 3).
    """
    room = EMBEDDED_MAX_PAYLOAD - ENVELOPE_MARGIN - 4 * math.ceil(request_body / 3)
    return max(0, room * 3 // 4)


class Proxy(Handler[ProxyConfig]):
    """Forwards requests to ``targets`` and answers with their responses.

    Adds ``X-Forwarded-For/-Proto/-Host`` and ``Forwarded``, removes hop-by-hop headers both ways, retries (a
    refused connection for any method; timeouts and 502/503/504 for idempotent ones) on another target within a
    retry budget, ejects targets that keep failing, and checks their health in the background when asked. A
    refused connection is a 502, a timeout a 504, no available target a 503: problem documents naming the target.
    """

    name = "proxy"
    version = "1.0.0"
    description = "Forwards requests to upstream HTTP servers: balancing, retries, outlier ejection, health checks."
    capabilities = ("respond.proxy",)
    Config = ProxyConfig
    max_execution_time = DEFAULT_STAGE_TIME_LIMIT

    def __init__(self, config: ProxyConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self.upstreams = Upstreams(config.targets, config.balance, config.passive_health, instance)
        self.budget = RetryBudget(config.retry_budget)
        self.client: httpx.AsyncClient | None = None
        self.checks: asyncio.Task[None] | None = None
        self.retried = 0

    async def startup(self) -> None:
        """Open the connection pool and start the health checks."""
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout_ms / 1000),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=MAX_IDLE_CONNECTIONS),
            follow_redirects=False,  # a redirect is the client's to follow
            trust_env=False,  # HTTP_PROXY and friends must not reroute traffic meant for the targets
        )
        if self.config.active_health is not None:
            self.checks = asyncio.create_task(self._check_forever(self.client, self.config.active_health))

    async def shutdown(self) -> None:
        """Stop the health checks and close the connection pool."""
        if self.checks is not None:
            self.checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.checks
            self.checks = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def health_check(self) -> Health:
        available = [u for u in self.upstreams.all if u.available(self.upstreams.clock())]
        if not available:
            return Health(HealthStatus.UNHEALTHY, f"no target available: {self.upstreams.unavailable()}")
        if len(available) < len(self.upstreams.all):
            return Health(HealthStatus.DEGRADED, f"{len(available)} of {len(self.upstreams.all)} targets available")
        return Health()

    async def get_metrics(self) -> dict[str, float]:
        figures = {"retries": float(self.retried), "retries_denied": float(self.budget.denied)}
        for index, upstream in enumerate(self.upstreams.all):
            figures[f"target{index}.requests"] = float(upstream.requests)
            figures[f"target{index}.failures"] = float(upstream.failures)
            figures[f"target{index}.ejections"] = float(upstream.ejections)
        return figures

    async def handle(self, envelope: Envelope) -> Action:
        client = self.client
        if client is None:
            raise RuntimeError(f"proxy {self.instance} is not started")
        config = self.config
        stage = envelope.current.label if envelope.current is not None else self.instance
        path = upstream_path(envelope, config.strip_prefix, config.rewrite)
        limit = config.max_response_bytes or response_limit(len(envelope.body))
        self.budget.request()
        tried: list[Upstream] = []
        outcomes: list[Try] = []
        for number in range(1 + config.retries):
            if number > 0:
                if not self.budget.spend():
                    log.info("retry budget spent; not retrying", instance=self.instance, target=tried[-1].url)
                    break
                self.retried += 1
            upstream = self.upstreams.choose(tried)
            if upstream is None:
                break
            tried.append(upstream)
            last = await self._try(client, upstream, envelope, path, limit)
            outcomes.append(last)
            if not (last.failed and last.retryable(envelope.method)):
                break
        if not outcomes:
            detail = f"no target of stage {stage} can take requests: {self.upstreams.unavailable()}"
            unavailable = problem(503, "Service Unavailable", detail, stage=stage, request_id=envelope.request_id,
                                  targets=[u.url for u in self.upstreams.all])  # fmt: skip
            return Respond(unavailable)
        envelope.response = outcomes[-1].answer(stage, envelope.request_id, outcomes[:-1])
        return Continue(envelope)

    async def _try(
        self, client: httpx.AsyncClient, upstream: Upstream, envelope: Envelope, path: str, limit: int
    ) -> Try:
        headers = request_headers(envelope, upstream.url, self.config.preserve_host)
        request = httpx.Request(envelope.method, upstream.url + path, headers=headers, content=envelope.body)
        upstream.pending += 1
        upstream.requests += 1
        try:
            outcome = await attempt(client, upstream.url, request, self.config.timeout_ms / 1000, limit)
        finally:
            upstream.pending -= 1
        if outcome.failed:
            self.upstreams.failed(upstream)
            log.info("upstream try failed", instance=self.instance, target=upstream.url, result=outcome.result.value,
                     status=outcome.response.status if outcome.response else None)  # fmt: skip
        else:
            self.upstreams.succeeded(upstream)
        return outcome

    async def _check_forever(self, client: httpx.AsyncClient, checks: ActiveHealth) -> None:
        while True:
            try:
                await asyncio.gather(*(self._check(client, upstream, checks) for upstream in self.upstreams.all))
            except Exception:  # a bug here must not silently end the checks for the life of the replica
                log.exception("health checks failed", instance=self.instance)
            await asyncio.sleep(checks.interval_s)

    async def _check(self, client: httpx.AsyncClient, upstream: Upstream, checks: ActiveHealth) -> None:
        try:
            response = await client.get(upstream.url + checks.path, timeout=checks.timeout_ms / 1000)
            passed = 200 <= response.status_code < 300
        except httpx.HTTPError:
            passed = False
        self.upstreams.checked(upstream, passed, checks.healthy, checks.unhealthy)
