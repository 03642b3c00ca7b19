"""Spans to an OTLP collector (opentelemetry-sdk): one server span per gateway request, one span per stage.

Imported only when an endpoint is configured (``pipeline.tracing``). Spans are made after the fact, from what
the request path measured anyway (start time and duration), so the path itself does no span bookkeeping; the
SDK's ``BatchSpanProcessor`` exports them from its own thread (``OTEL_BSP_*`` variables tune it).

Trace context: the gateway's span *is* the span named in the ``traceparent`` it sends with the envelope (and in the
``traceresponse`` it answers with): its ids are given to the SDK (``PresetIds``) rather than drawn at random. A
stage's span is a child of the ``traceparent`` carried in the NATS headers of the message (OpenTelemetry's
messaging conventions), so every stage of a request hangs under its gateway span, in the client's trace if the
client sent a ``traceparent``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from backworks.contracts.names import MSG_ID_HEADER, PIPELINE_STREAM
from backworks.pipeline.executor import Outcome

TRACEPARENT = "traceparent"
MESSAGING_SYSTEM = "nats"
PROPAGATOR = TraceContextTextMapPropagator()


class PresetIds(RandomIdGenerator):
    """Random ids, unless the caller set the next span's ids (the gateway's span is the one it already announced)."""

    def __init__(self) -> None:
        self.trace_id: int | None = None
        self.span_id: int | None = None

    def generate_span_id(self) -> int:
        if self.span_id is not None:
            span_id, self.span_id = self.span_id, None
            return span_id
        return super().generate_span_id()

    def generate_trace_id(self) -> int:
        if self.trace_id is not None:
            trace_id, self.trace_id = self.trace_id, None
            return trace_id
        return super().generate_trace_id()


class Tracing:
    """The process's tracer provider and exporter; ``shutdown`` flushes what is batched."""

    def __init__(self, service: str, instance: str | None = None) -> None:
        attributes: dict[str, Any] = {"service.name": service, "service.instance.id": instance or str(os.getpid())}
        self.ids = PresetIds()
        self.provider = TracerProvider(resource=Resource.create(attributes), id_generator=self.ids)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("backworks")

    def shutdown(self) -> None:
        self.provider.shutdown()

    def request_done(
        self,
        *,
        method: str,
        route: str,
        path: str,
        status: int,
        seconds: float,
        traceparent: str,
        client_traceparent: str | None,
    ) -> None:
        """The gateway's server span of one request, with the ids of ``traceparent`` (what the stages got)."""
        _, trace_id, span_id, _ = traceparent.split("-")
        parent = PROPAGATOR.extract({TRACEPARENT: client_traceparent}) if client_traceparent else None
        if parent is not None and not trace.get_current_span(parent).get_span_context().is_valid:
            parent = None
        end = time.time_ns()
        self.ids.trace_id, self.ids.span_id = int(trace_id, 16), int(span_id, 16)
        try:
            span = self.tracer.start_span(
                f"{method} {route}",
                context=parent,
                kind=SpanKind.SERVER,
                start_time=end - int(seconds * 1e9),
                attributes={
                    "http.request.method": method,
                    "http.route": route,
                    "url.path": path,
                    "http.response.status_code": status,
                },
            )
        finally:
            self.ids.trace_id = self.ids.span_id = None  # a root-less parent draws no trace id: never reuse it
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end)

    def stage_done(self, msg: Msg, outcome: Outcome, durable: str) -> None:
        """One stage's span: its hooks on one message, a child of the message's ``traceparent`` header."""
        envelope = outcome.envelope
        timing = envelope.timings[-1]
        headers = msg.headers or {}
        carrier = {TRACEPARENT: headers.get(TRACEPARENT) or envelope.traceparent or ""}
        end = time.time_ns()
        span = self.tracer.start_span(
            f"process {timing.stage}",
            context=PROPAGATOR.extract(carrier),
            kind=SpanKind.CONSUMER,
            start_time=end - int(timing.ms * 1e6),
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": durable,
                "messaging.message.id": headers.get(MSG_ID_HEADER, envelope.id),
                "messaging.message.body.size": len(msg.data),
                "messaging.nats.stream": PIPELINE_STREAM,
                "backworks.stage": timing.stage,
                "backworks.attempt": timing.attempt,
                "backworks.request_id": envelope.request_id,
            },
        )
        if outcome.failure is not None:
            span.set_status(Status(StatusCode.ERROR, outcome.failure.value))
        span.end(end)
