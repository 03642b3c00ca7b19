"""The gateway's Starlette application: blueprint routes, the envelope hand-off, health."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backworks.contracts.envelope import Envelope, Stage, StageError
from backworks.contracts.names import MSG_ID_HEADER, PIPELINE_STREAM, message_id, stage_durable, stage_subject
from backworks.gateway.errors import ProblemError
from backworks.gateway.problems import from_stage_error, problem_response
from backworks.gateway.replies import ReplyInbox
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.deadletters import DeadLetterWatch, record_event
from backworks.pipeline.errors import PipelineError
from backworks.pipeline.gate import StageGate
from backworks.pipeline.lifecycle import freeze_startup_objects
from backworks.pipeline.liveness import LivenessView
from backworks.pipeline.publisher import AckedPublisher

log = structlog.get_logger("backworks.gateway")

HEALTH_PATH = "/_backworks/health"
PUBLISH_TIMEOUT = 1.0
CONNECT_RETRY_FOR = 30.0
STALL_PROBE_TIMEOUT = 0.1
"""Seconds the timeout path spends asking JetStream where a request is stuck."""
LIVENESS_READY_TIMEOUT = 2.0
REQUEST_ID_HEADER = "x-request-id"
SKIPPED_HEADER = "x-backworks-skipped"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass
class GatewayState:
    """What the running gateway holds: the broker connection, the inbox, the liveness view."""

    blueprint: LoadedBlueprint
    servers: list[str]
    gateway_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    client: Client | None = None
    js: JetStreamContext | None = None
    inbox: ReplyInbox | None = None
    liveness: LivenessView | None = None
    gate: StageGate = field(default_factory=StageGate)
    breakers: FleetBreakers | None = None
    dead_letters: DeadLetterWatch | None = None
    publisher: AckedPublisher | None = None
    access_log: bool = False


def server_timing(envelope: Envelope, total_ms: float) -> str:
    entries = [f"{t.stage};dur={t.ms:.3f}" for t in envelope.timings]
    entries.append(f"total;dur={total_ms:.3f}")
    return ", ".join(entries)


def request_id_of(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    return given if given and VALID_REQUEST_ID.match(given) else uuid.uuid4().hex


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "Payload too large", f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, "Payload too large", f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class Pipeline:
    """Sends one request through an endpoint's itinerary and waits for the result."""

    def __init__(self, state: GatewayState, endpoint: str) -> None:
        self.state = state
        self.endpoint = endpoint
        self.itinerary: list[Stage] = state.blueprint.itinerary(endpoint)
        self.timeout_ms = state.blueprint.model.timeout_ms(endpoint)
        self.max_body = state.blueprint.model.gateway.max_body_bytes

    def plan(self, envelope: Envelope) -> tuple[Stage | None, list[StageError]]:
        """Refuse at once if a critical stage cannot take work; otherwise move past unavailable stages."""
        envelope.itinerary = list(self.itinerary)
        gate = self.state.gate
        if blocked := gate.blocked_critical(self.itinerary):
            stage, reason = blocked
            raise ProblemError(
                503, "Plugin unavailable", f"stage {stage.label}: {reason}", stage=stage.label, cause="unavailable"
            )
        return gate.advance(envelope)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = request_id_of(request)
        try:
            response = await self._run(request, request_id, started)
        except ProblemError as problem:
            response = problem_response(problem, instance=request.url.path, request_id=request_id)
            response.headers[REQUEST_ID_HEADER] = request_id
            log.warning(
                "request failed",
                status=problem.status,
                stage=problem.stage,
                detail=problem.detail,
                request_id=request_id,
            )
        if self.state.access_log:
            log.info("request", method=request.method, path=request.url.path, status=response.status_code,
                     ms=round((time.perf_counter() - started) * 1000, 3), request_id=request_id)  # fmt: skip
        return response

    async def _run(self, request: Request, request_id: str, started: float) -> Response:
        state = self.state
        if state.client is None or state.publisher is None or state.inbox is None or not state.client.is_connected:
            raise ProblemError(503, "Broker unavailable", "the message broker (NATS) is not reachable", cause="broker")
        body = await read_body(request, self.max_body)
        scope = request.scope
        client = scope.get("client")
        envelope = Envelope(
            request_id=request_id,
            deadline=time.time() + self.timeout_ms / 1000,
            route=self.endpoint,
            method=scope["method"],
            path=scope["path"],
            path_params={k: str(v) for k, v in scope["path_params"].items()},
            query=list(request.query_params.multi_items()) if scope["query_string"] else [],
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
            client=client[0] if client else None,
        )
        envelope.reply_to = state.inbox.subject(envelope.correlation_id)
        first, skipped = self.plan(envelope)
        for error in skipped:
            await record_event(state.client, envelope, error)
        if first is None:  # every stage skipped is impossible: the handler is critical
            raise ProblemError(502, "Empty pipeline", "no stage left to run")
        future = state.inbox.expect(envelope.correlation_id)
        timer = asyncio.get_running_loop().call_later(max(0.0, envelope.remaining()), _expire, future)
        try:
            try:
                await state.publisher.publish(
                    stage_subject(first.instance, first.phase),
                    envelope.to_json(),
                    {MSG_ID_HEADER: message_id(envelope.id, envelope.cursor)},
                    PUBLISH_TIMEOUT,
                )
            except PipelineError as exc:
                raise ProblemError(
                    503, "Broker unavailable", f"the pipeline did not accept the request: {exc}",
                    stage=first.label, cause="publish",
                ) from exc  # fmt: skip
            try:
                raw = await future
            except TimeoutError:
                raise await self._deadline_problem(envelope) from None
        finally:
            timer.cancel()
            state.inbox.forget(envelope.correlation_id)
        return self._respond(Envelope.from_json(raw), request_id, started)

    async def _deadline_problem(self, envelope: Envelope) -> ProblemError:
        stuck = await self._locate_stall(envelope)
        if stuck is not None:
            stage, why = stuck
            detail = f"no response within {self.timeout_ms} ms: stage {stage.label} {why}"
            return ProblemError(504, "Pipeline timed out", detail, stage=stage.label, cause="timeout")
        stages = " -> ".join(s.label for s in envelope.itinerary)
        detail = f"no response within {self.timeout_ms} ms from the pipeline ({stages})"
        return ProblemError(504, "Pipeline timed out", detail, cause="deadline")

    async def _locate_stall(self, envelope: Envelope) -> tuple[Stage, str] | None:
        """Only on the timeout path: the first stage with no live replica or with messages nobody took."""
        liveness, js = self.state.liveness, self.state.js
        for stage in envelope.itinerary:
            if liveness is not None and liveness.count(stage.instance) == 0:
                return stage, "has no live replica"
        if js is None:
            return None

        async def waiting(stage: Stage) -> int:
            durable = stage_durable(stage.instance, stage.phase)
            info = await js.consumer_info(PIPELINE_STREAM, durable, timeout=STALL_PROBE_TIMEOUT)
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

        counts = await asyncio.gather(*(waiting(s) for s in envelope.itinerary), return_exceptions=True)
        for stage, count in zip(envelope.itinerary, counts, strict=True):
            if isinstance(count, int) and count > 0:
                return stage, f"has {count} message(s) waiting that no replica finished"
        return None

    def _respond(self, envelope: Envelope, request_id: str, started: float) -> Response:
        total_ms = (time.perf_counter() - started) * 1000
        extra = {REQUEST_ID_HEADER: request_id, "server-timing": server_timing(envelope, total_ms)}
        skipped = [e.stage for e in envelope.errors if e.skipped]
        if skipped:
            extra[SKIPPED_HEADER] = ",".join(skipped)
        fatal = next((e for e in envelope.errors if not e.skipped), None)
        if fatal is not None:
            problem = from_stage_error(fatal)
            log.warning(
                "stage failed", stage=fatal.stage, cause=fatal.kind, detail=fatal.message, request_id=request_id
            )
            return problem_response(problem, instance=envelope.path, request_id=request_id, headers=extra)
        if envelope.response is None:
            problem = ProblemError(502, "No response", "the pipeline finished without producing a response")
            return problem_response(problem, instance=envelope.path, request_id=request_id, headers=extra)
        result = envelope.response
        response = Response(result.body, status_code=result.status)
        response.raw_headers.extend(
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in result.headers
            if name != "content-length" and name not in extra
        )
        response.raw_headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in extra.items())
        return response


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


SEVERITY = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def _worst(*statuses: str) -> str:
    return max(statuses, key=SEVERITY.__getitem__)


def _instance_status(critical: bool, live: int, breaker: str, replica_health: list[str]) -> str:
    """unhealthy: a critical stage cannot be served; degraded: an optional one cannot, or a replica is unwell."""
    cannot_serve = live == 0 or breaker == "open"
    if cannot_serve:
        return "unhealthy" if critical else "degraded"
    if breaker == "half-open" or any(h != "healthy" for h in replica_health):
        return "degraded"
    return "healthy"


def health_report(state: GatewayState) -> tuple[dict[str, Any], int]:
    """Broker connectivity, live replicas, plugin health and breaker state per stage, for load balancers."""
    connected = bool(state.client and state.client.is_connected)
    status = "healthy" if connected else "unhealthy"
    breakers = state.breakers.snapshot() if state.breakers else {}
    stages: dict[str, Any] = {}
    for name, instance in state.blueprint.instances.items():
        live = state.liveness.live(name) if state.liveness else []
        breaker = breakers.get(name, {"state": "closed"})
        instance_status = _instance_status(
            instance.critical, len(live), str(breaker.get("state")), [r.health for r in live]
        )
        status = _worst(status, instance_status)
        for phase in instance.cls.phases:
            stages[f"{name}.{phase.value}"] = {
                "instance": name,
                "plugin": instance.cls.name,
                "phase": phase.value,
                "critical": instance.critical,
                "status": instance_status,
                "live_replicas": len(live),
                "breaker": breaker,
                "replicas": [
                    {
                        "replica": r.replica,
                        "pid": r.pid,
                        "host": r.host,
                        "health": r.health,
                        "message": r.health_message,
                        "inflight": r.inflight,
                        "processed": r.processed,
                        "failed": r.failed,
                        "metrics": r.metrics,
                    }
                    for r in live
                ],
            }
    body = {
        "status": status,
        "gateway": state.gateway_id,
        "blueprint": state.blueprint.model.name,
        "nats": broker.describe(state.client) if state.client else {"connected": False, "url": None},
        "stages": stages,
    }
    return body, 503 if status == "unhealthy" else 200


async def _connect(state: GatewayState) -> None:
    deadline = time.monotonic() + CONNECT_RETRY_FOR
    while True:
        try:
            state.client = await broker.connect(state.servers, name=f"backworks-gateway-{state.gateway_id}")
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for NATS", servers=state.servers, error=str(exc))
            await asyncio.sleep(0.5)
    state.js = broker.jetstream(state.client, timeout=PUBLISH_TIMEOUT)
    state.publisher = AckedPublisher(state.client)
    await state.publisher.start()
    state.inbox = ReplyInbox(state.client, state.gateway_id)
    await state.inbox.start()
    state.liveness = LivenessView(state.js)
    await state.liveness.start()
    settings = {name: item.spec.breaker for name, item in state.blueprint.instances.items()}
    state.breakers = FleetBreakers(state.js, settings, f"gateway-{state.gateway_id}")
    await state.breakers.start()
    state.gate = StageGate(state.liveness, state.breakers)
    state.dead_letters = DeadLetterWatch(state.client, state.js)
    await state.dead_letters.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.liveness.ready.wait(), LIVENESS_READY_TIMEOUT)


def build_app(state: GatewayState) -> Starlette:
    """The Starlette app for a loaded blueprint."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _connect(state)
        freeze_startup_objects()
        log.info("gateway ready", gateway=state.gateway_id, blueprint=state.blueprint.model.name)
        try:
            yield
        finally:
            if state.dead_letters:
                await state.dead_letters.stop()
            if state.breakers:
                await state.breakers.stop()
            if state.liveness:
                await state.liveness.stop()
            if state.inbox:
                await state.inbox.stop()
            if state.client:
                await state.client.drain()

    async def health(request: Request) -> Response:
        body, status = health_report(state)
        return JSONResponse(body, status_code=status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        problem = ProblemError(exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail))
        return problem_response(problem, instance=request.url.path, request_id=request_id_of(request),
                                headers=exc.headers)  # fmt: skip

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled gateway error", path=request.url.path)
        problem = ProblemError(500, "Internal error", f"the gateway failed: {type(exc).__name__}", cause="gateway")
        return problem_response(problem, instance=request.url.path, request_id=request_id_of(request))

    routes = [Route(HEALTH_PATH, health, methods=["GET"])]
    for name, endpoint in state.blueprint.model.endpoints.items():
        handler: Callable[[Request], Awaitable[Response]] = Pipeline(state, name).handle
        routes.append(Route(endpoint.path, handler, methods=endpoint.methods, name=name))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: crash},
    )
