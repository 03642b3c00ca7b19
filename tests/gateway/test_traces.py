"""W3C trace context: a client's trace is continued (or one is started), sent to the stages as a NATS header,
answered as ``traceresponse``, and its trace id is in the request's events and log lines."""

from __future__ import annotations

import re

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from backworks.contracts.names import REQUEST_RESPONDED_SUBJECT
from backworks.gateway.tap import TraceContext, trace_id_of
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.events import of_request, stream_events
from tests.serving import Gateway, wait_live
from tests.stages import running_stages
from tests.waiting import eventually

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def test_only_valid_traceparents_are_continued() -> None:
    assert trace_id_of(PARENT) == TRACE
    assert trace_id_of(f"00-{'0' * 32}-00f067aa0ba902b7-01") is None
    assert trace_id_of(f"00-{TRACE}-{'0' * 16}-01") is None
    assert trace_id_of(f"ff-{TRACE}-00f067aa0ba902b7-01") is None
    assert trace_id_of("garbage") is None
    continued = TraceContext.of(PARENT)
    assert (continued.trace_id, continued.flags) == (TRACE, "01") and continued.span_id != "00f067aa0ba902b7"
    assert TraceContext.of(None).trace_id != TraceContext.of(None).trace_id


async def test_a_trace_is_continued_to_the_stages_the_events_the_logs_and_the_response(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    headers_seen: list[str] = []

    async def hand_off(msg: Msg) -> None:
        headers_seen.append((msg.headers or {}).get("traceparent", ""))

    tap = await nats_client.subscribe("bw.stage.>", cb=hand_off)
    async with running_stages(example, nats_client), gateway(example) as (http, state):
        await wait_live(state, replicas={name: 1 for name in example.instances})
        state.access_log = True  # a line per request, which must carry the trace id
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            continued = await http.get("/hello/a", headers={"traceparent": PARENT, "x-request-id": "traced"})
            started = await http.get("/hello/b", headers={"x-request-id": "untraced"})
        await eventually(lambda: state.forwarder is not None and state.forwarder.events.confirmed >= 4)
    await tap.unsubscribe()
    answered = TRACEPARENT.match(continued.headers["traceresponse"])
    assert answered is not None and answered.group(1) == TRACE and answered.group(2) != "00f067aa0ba902b7"
    assert continued.headers["traceresponse"] in headers_seen
    new = TRACEPARENT.match(started.headers["traceresponse"])
    assert new is not None and new.group(1) != TRACE
    events = await stream_events(broker.jetstream(nats_client))
    assert {event["trace_id"] for _, event in of_request(events, "traced")} == {TRACE}
    assert {event["trace_id"] for _, event in of_request(events, "untraced")} == {new.group(1)}
    assert any(s == REQUEST_RESPONDED_SUBJECT for s, _ in of_request(events, "untraced"))
    lines = {entry.get("request_id"): entry.get("trace_id") for entry in logs if entry["event"] == "request"}
    assert lines == {"traced": TRACE, "untraced": new.group(1)}
