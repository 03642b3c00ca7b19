"""One endpoint's request, end to end: HTTP request -> envelope -> first hand-off -> reply -> HTTP response."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from urllib.parse import parse_qsl

import structlog
from nats.errors import MaxPayloadError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from backworks.contracts.envelope import Envelope, Stage, StageError
from backworks.contracts.names import PIPELINE_STREAM, stage_durable
from backworks.contracts.types import FailureKind
from backworks.gateway.errors import ProblemError
from backworks.gateway.ids import RequestIds, request_ids
from backworks.gateway.problems import from_stage_error, problem_response
from backworks.gateway.splits import EndpointSplits
from backworks.gateway.state import GatewayState
from backworks.gateway.tap import RequestTap, Served, TraceContext, events_switched_off
from backworks.pipeline import broker, credentials
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.deadletters import record_event
from backworks.pipeline.errors import PipelineError

log = structlog.get_logger("backworks.gateway")

STALL_PROBE_TIMEOUT = 0.1
"""Seconds the timeout path spends asking JetStream where a request is stuck."""
REQUEST_ID_HEADER = "x-request-id"
SKIPPED_HEADER = "x-backworks-skipped"
REVISION_HEADER = "x-backworks-revision"
"""The blueprint revision a request was served under (``backworks history`` lists them)."""
TRACEPARENT_HEADER = "traceparent"
TRACERESPONSE_HEADER = "traceresponse"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
RECONNECT_SHARE = 0.5
"""Share of a request's deadline it may spend waiting for the gateway's NATS client to reconnect to another node
of a cluster (its node left); the rest is for the pipeline. A lone server has no other node to go to: the
request waits ``broker.RECONNECT_GRACE`` for it, as before."""
CLIENT_CLOSED_REQUEST = 499
"""The status logged for a request whose client disconnected before it could be answered (nginx's 499)."""


def server_timing(envelope: Envelope, total_ms: float) -> str:
    entries = [f"{t.stage};dur={t.ms:.3f}" for t in envelope.timings]
    entries.append(f"total;dur={total_ms:.3f}")
    return ", ".join(entries)


def request_id_of(request: Request, fresh: str | None = None) -> str:
    """The client's ``x-request-id`` when valid, else ``fresh`` (a new random id when not given)."""
    given = request.headers.get(REQUEST_ID_HEADER)
    return given if given and VALID_REQUEST_ID.match(given) else (fresh or uuid.uuid4().hex)


def url_path(request: Request) -> str:
    """``request.url.path`` without building Starlette's ``URL`` (it parses the Host header and re-splits the URL on
    every call): the scope's path with the three characters ``URL`` escapes escaped the same way."""
    return str(request.scope["path"]).replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def query_items(query_string: bytes) -> list[tuple[str, str]]:
    """``request.query_params.multi_items()`` without the ``QueryParams`` multidict: the same ``parse_qsl``."""
    return parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []


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

    def __init__(
        self, state: GatewayState, endpoint: str, loaded: LoadedBlueprint | None = None, revision: int | None = None
    ) -> None:
        """``loaded``/``revision``: the blueprint revision this endpoint belongs to (default: the state's)."""
        self.state = state
        self.endpoint = endpoint
        self.revision = state.revision if loaded is None else revision
        """Stamped on every envelope: its stages run it with this revision's configs."""
        loaded = loaded or state.blueprint
        self.itinerary: list[Stage] = loaded.itinerary(endpoint)
        self.timeout_ms = loaded.model.timeout_ms(endpoint)
        self.route_path = loaded.model.endpoints[endpoint].path
        self.max_body = loaded.model.gateway.max_body_bytes
        self.expose_errors = loaded.model.gateway.expose_errors
        model = loaded.model
        self.flow_events = model.events.enabled and not events_switched_off()
        """Per-request events (received, stage completed, responded); failures are evented either way."""
        self.bodies = model.endpoints[endpoint].events.bodies
        self.body_bytes = model.events.body_bytes
        self.stage_completed = model.events.stage_completed
        self.splits = EndpointSplits.of(loaded, endpoint)
        """The endpoint's canary splits (None without): each request's branches are chosen as it is sent."""

    def tap(self) -> RequestTap | None:
        forwarder = self.state.forwarder
        if not self.flow_events or forwarder is None:
            return None
        return RequestTap(forwarder.events, self.bodies, self.body_bytes, self.stage_completed)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        path = url_path(request)
        ids = request_ids()
        request_id = request_id_of(request, ids.request)
        # Every line logged while serving this request carries its id (reset after, for callers sharing a task).
        # bind/reset rather than structlog's bound_contextvars(), which copies the whole context: ~11 µs vs ~2 µs.
        trace = TraceContext.of(request.headers.get(TRACEPARENT_HEADER), ids.trace, ids.span)
        bound = structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace.trace_id)
        served = Served()
        tap = self.tap()
        metrics = self.state.metrics
        if metrics is not None:
            metrics.inflight.inc()
        try:
            try:
                response = await self._run(request, request_id, started, served, tap, trace, ids)
            except ProblemError as problem:
                response = problem_response(problem, instance=path, request_id=request_id)
                response.headers[REQUEST_ID_HEADER] = request_id
                log.warning("request failed", status=problem.status, stage=problem.stage, detail=problem.detail)
                if problem.status >= 500:
                    self._record_own_failure(problem, request_id)
            except ClientDisconnect:
                # The client went away while sending its body: nobody to answer, nothing failed on our side.
                log.info("client disconnected", method=request.method, path=path)
                response = Response(status_code=CLIENT_CLOSED_REQUEST)
            response.headers[TRACERESPONSE_HEADER] = trace.traceparent
            total_ms = (time.perf_counter() - started) * 1000
            if metrics is not None:
                metrics.observe(self.endpoint, response.status_code, total_ms / 1000,
                                served.reply.timings if served.reply is not None else [])  # fmt: skip
            if self.splits is not None and served.branches and self.state.rollbacks is not None:
                self.state.rollbacks.observe(self.endpoint, self.splits.splits, served.branches, response.status_code,
                                             total_ms)  # fmt: skip
            if tap is not None:
                tap.responded(served, route=self.endpoint, method=request.method, path=path,
                              request_id=request_id, status=response.status_code, total_ms=total_ms)  # fmt: skip
            if (recorder := self.state.recorder) is not None:  # `backworks record`: returns at once
                recorder.capture(self.endpoint, served.sent, response, total_ms)
            if self.state.tracing is not None:
                self.state.tracing.request_done(
                    method=request.method, route=self.route_path, path=path, status=response.status_code,
                    seconds=total_ms / 1000, traceparent=trace.traceparent,
                    client_traceparent=request.headers.get(TRACEPARENT_HEADER),
                )  # fmt: skip
            if self.state.access_log:
                log.info("request", method=request.method, path=path, status=response.status_code,
                         ms=round(total_ms, 3))  # fmt: skip
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            if metrics is not None:
                metrics.inflight.dec()
        return response

    def _record_own_failure(self, problem: ProblemError, request_id: str) -> None:
        """A request the gateway itself failed (503, 504) ends on record: counted for health, and an event."""
        cause = problem.cause or FailureKind.GATEWAY
        self.state.dropped[cause.value] += 1
        forwarder = self.state.forwarder
        if forwarder is None:
            return  # never connected: the counter is the record
        error = StageError(stage=problem.stage or "gateway", kind=cause, message=problem.detail, skipped=False)
        placeholder = Envelope(id="", request_id=request_id, route=self.endpoint, method="", path="")
        record_event(forwarder.events, placeholder, error)

    def envelope(self, request: Request, request_id: str, body: bytes, ids: RequestIds | None = None) -> Envelope:
        """The envelope for ``request``, its itinerary attached and its cursor at the first stage.

        Validated, not ``model_construct``-ed: pydantic-core validates these fields in ~4 µs, where the pure-Python
        ``model_construct`` took ~250 µs (measured)."""
        ids = ids or request_ids()
        scope = request.scope
        client = scope.get("client")
        return Envelope(
            id=ids.envelope,
            correlation_id=ids.correlation,
            request_id=request_id,
            deadline=time.time() + self.timeout_ms / 1000,
            route=self.endpoint,
            method=scope["method"],
            path=scope["path"],
            path_params={k: str(v) for k, v in scope["path_params"].items()},
            query=query_items(scope["query_string"]),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
            client=client[0] if client else None,
            revision=self.revision,
            itinerary=list(self.itinerary),
        )

    async def _run(
        self,
        request: Request,
        request_id: str,
        started: float,
        served: Served,
        tap: RequestTap | None,
        trace: TraceContext,
        ids: RequestIds,
    ) -> Response:
        state = self.state
        client, inbox, forwarder = state.client, state.inbox, state.forwarder
        grace = broker.RECONNECT_GRACE
        if client is not None and len(client.servers) > 1:
            grace = max(grace, self.timeout_ms / 1000 * RECONNECT_SHARE)
        waiting_since = time.time()
        connected = client is not None and (client.is_connected or await broker.reconnected(client, grace))
        waited = time.time() - waiting_since
        if client is None or forwarder is None or inbox is None or not connected:
            raise ProblemError(
                503, "Broker unavailable", "the message broker (NATS) is not reachable", cause=FailureKind.BROKER
            )
        body = await read_body(request, self.max_body)
        envelope = self.envelope(request, request_id, body, ids)
        envelope.deadline -= waited  # the wait for a reconnect counts against the request's deadline
        if self.splits is not None:
            rollbacks = state.rollbacks
            self.splits.route(envelope, rollbacks.held if rollbacks is not None else None)
            served.branches = envelope.branches
        if blocked := forwarder.blocked_critical(envelope.itinerary):  # refuse at once: the request cannot succeed
            stage, reason = blocked
            raise ProblemError(503, "Plugin unavailable", f"stage {stage.label}: {reason}", stage=stage.label,
                               cause=FailureKind.UNAVAILABLE)  # fmt: skip
        envelope.trace_id, envelope.traceparent = trace.trace_id, trace.traceparent
        served.sent = envelope
        if tap is not None:
            tap.received(envelope)
        credentials.bind(envelope)  # this request's task: no line it logs shows the request's credentials
        envelope.reply_to = inbox.subject(envelope.correlation_id)
        future = inbox.expect(envelope.correlation_id, envelope.remaining())
        try:
            try:
                await forwarder.forward(envelope)
            except MaxPayloadError:  # body and headers within the gateway's limits, the envelope beyond the broker's
                detail = (f"the request, as an envelope, exceeds the broker's max_payload ({client.max_payload} "
                          "bytes); send less, or raise NATS max_payload above gateway.max_body_bytes")  # fmt: skip
                raise ProblemError(413, "Payload too large", detail) from None
            except PipelineError as exc:
                target = envelope.current
                raise ProblemError(
                    503, "Broker unavailable", f"the pipeline did not accept the request: {exc}",
                    stage=target.label if target else None, cause=FailureKind.PUBLISH,
                ) from exc  # fmt: skip
            try:
                reply = await future
            except TimeoutError:
                raise await self._deadline_problem(envelope) from None
        finally:
            inbox.forget(envelope.correlation_id)
        served.reply = reply
        return self._respond(reply, request_id, started)

    async def _deadline_problem(self, envelope: Envelope) -> ProblemError:
        stuck = await self._locate_stall(envelope)
        if stuck is not None:
            stage, why = stuck
            detail = f"no response within {self.timeout_ms} ms: stage {stage.label} {why}"
            return ProblemError(504, "Pipeline timed out", detail, stage=stage.label, cause=FailureKind.TIMEOUT)
        stages = " -> ".join(s.label for s in envelope.itinerary)
        detail = f"no response within {self.timeout_ms} ms from the pipeline ({stages})"
        return ProblemError(504, "Pipeline timed out", detail, cause=FailureKind.DEADLINE)

    async def _locate_stall(self, envelope: Envelope) -> tuple[Stage, str] | None:
        """Only on the timeout path: the first stage with no live replica or with messages nobody took."""
        liveness, js = self.state.liveness, self.state.js
        for stage in envelope.itinerary:
            # absent(), not count() == 0: a view whose registry watch went deaf (its bucket electing a leader)
            # counts nobody live, which would blame a stage that is serving (measured in a node partition).
            if liveness is not None and liveness.absent(stage.instance):
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
        return client_response(envelope, request_id, (time.perf_counter() - started) * 1000, self.expose_errors)


def client_response(envelope: Envelope, request_id: str, total_ms: float, expose_errors: bool) -> Response:
    """The HTTP response for a finished envelope, as the client gets it (``backworks replay`` builds its own so)."""
    extra = {REQUEST_ID_HEADER: request_id, "server-timing": server_timing(envelope, total_ms)}
    if envelope.revision is not None:
        extra[REVISION_HEADER] = str(envelope.revision)
    skipped = [e.stage for e in envelope.errors if e.skipped]
    if skipped:
        extra[SKIPPED_HEADER] = ",".join(skipped)
    fatal = next((e for e in envelope.errors if not e.skipped), None)
    if fatal is not None:
        problem = from_stage_error(fatal, expose=expose_errors)
        log.warning("stage failed", stage=fatal.stage, cause=fatal.kind.value, detail=fatal.message)
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
