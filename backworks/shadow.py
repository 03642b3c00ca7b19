"""Shadow replay: recorded requests run again, in this process, with one plugin instance swapped for another.

Why in-process: a replay must have no effect on the live path. Sent to the live replicas it would pass through
their durable consumers, count in their breakers, liveness and stores, and its answer would go through the same
forwarders as real traffic. Here every stage of the endpoint's itinerary runs in the ``backworks replay`` process
through the stage host's own isolation boundary (``pipeline.executor.execute``: time limit, masking, criticality),
with plugin stores in memory (``MemoryRuntime``: a rate limiter or cache starts empty and touches no live key),
and the response is built by the gateway's own ``client_response``. Nothing is published on the broker; the one
connection reads ``BW_RECORD``. What the plugins themselves do is theirs: a ``proxy`` handler calls its upstream
and a ``python`` handler runs its code, as they would for a client.

The itinerary is the endpoint's as the running blueprint has it, with every stage of the replaced instance served
by the candidate instead (configured as the blueprint, the file or the revision it is taken from has it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.recordings import Recording
from backworks.gateway.endpoint import client_response
from backworks.pipeline import credentials
from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance
from backworks.pipeline.deadletters import open_seal
from backworks.pipeline.errors import PipelineError
from backworks.pipeline.executor import execute
from backworks.pipeline.plugin import Plugin
from backworks.pipeline.secrets import MASK
from backworks.pipeline.stores import MemoryRuntime
from backworks.shadowdiff import Observed

REPLICA = "shadow"
"""What the replayed envelopes' timings name as the replica."""


class ReplayError(PipelineError):
    """The replay cannot be set up as asked (an unknown instance, no stage to replace...)."""


@dataclass(frozen=True)
class ShadowPlan:
    """Which instance replaces which in an endpoint's itinerary, and the instances the replay runs."""

    endpoint: str
    against: str
    replacing: str
    itinerary: list[Stage]
    instances: dict[str, ResolvedInstance]
    timeout_ms: int
    expose_errors: bool


def plan(
    live: LoadedBlueprint, source: LoadedBlueprint, endpoint: str, against: str, replacing: str | None = None
) -> ShadowPlan:
    """Replace ``replacing`` (by default: the one instance of the endpoint's itinerary with ``against``'s plugin
    type, or ``against`` itself when it is in the itinerary) by ``against`` as ``source`` configures it."""
    if endpoint not in live.model.endpoints:
        raise ReplayError(f"the recordings are of endpoint {endpoint!r}, which the blueprint {live.path} does not have")
    candidate = source.instances.get(against)
    if candidate is None:
        raise ReplayError(
            f"no plugin instance {against!r} in {source.path}; instances: {', '.join(sorted(source.instances))}"
        )
    itinerary = live.itinerary(endpoint)
    names = list(dict.fromkeys(stage.instance for stage in itinerary))
    if replacing is None:
        same_type = [name for name in names if live.instances[name].cls.name == candidate.cls.name]
        if against in names:
            replacing = against
        elif len(same_type) == 1:
            replacing = same_type[0]
        else:
            found = ", ".join(same_type) or "none"
            raise ReplayError(
                f"cannot tell which stage of endpoint {endpoint} {against} replaces (instances of plugin "
                f"{candidate.cls.name} there: {found}); name it with --replacing ({', '.join(names)})"
            )
    if replacing not in names:
        raise ReplayError(f"endpoint {endpoint} does not run {replacing!r}; its stages: {', '.join(names)}")
    shadow: list[Stage] = []
    for stage in itinerary:
        if stage.instance != replacing:
            shadow.append(stage)
        elif stage.phase in candidate.cls.phases:
            shadow.append(candidate.stage(stage.phase))
        else:
            raise ReplayError(
                f"{against} ({candidate.cls.name}) has no {stage.phase.value} phase to replace {stage.label}"
            )
    instances = {name: live.instances[name] for name in names if name != replacing}
    instances[against] = candidate
    return ShadowPlan(
        endpoint, against, replacing, shadow, instances, live.model.timeout_ms(endpoint),
        live.model.gateway.expose_errors,
    )  # fmt: skip


def replay_envelope(recording: Recording, itinerary: list[Stage], timeout_ms: int) -> Envelope:
    """The recorded request, credentials restored from the seal, as a fresh envelope for the shadow itinerary.

    ``CredentialsUnavailable`` when its credentials are sealed and the key here does not open them; a recording
    whose credentials were not kept is replayed without them.
    """
    sent = recording.envelope
    headers, query = sent.headers, sent.query
    if recording.sealed is not None:
        kept = open_seal(recording.sealed)
        headers, query = kept.headers, kept.query
    elif recording.credentials_dropped:
        headers = [(name, value) for name, value in headers if value != MASK]
        query = [(name, value) for name, value in query if value != MASK]
    return Envelope(
        request_id=sent.request_id, trace_id=sent.trace_id, traceparent=sent.traceparent,
        deadline=time.time() + timeout_ms / 1000, route=sent.route, method=sent.method, path=sent.path,
        path_params=sent.path_params, query=query, headers=headers, body=sent.body, client=sent.client,
        itinerary=list(itinerary),
    )  # fmt: skip


def stage_ms(timings: str, instance: str) -> float | None:
    """Milliseconds ``instance`` took according to a ``server-timing`` header (its phases summed)."""
    total, seen = 0.0, False
    for entry in timings.split(","):
        name, _, rest = entry.strip().partition(";")
        if name.rsplit(".", 1)[0] == instance and rest.startswith("dur="):
            total, seen = total + float(rest[4:]), True
    return round(total, 3) if seen else None


def recorded(recording: Recording, replacing: str) -> Observed:
    """The response the client got, as the diff compares it."""
    response = recording.response
    timing = next((value for name, value in response.headers if name == "server-timing"), "")
    return Observed(
        response.status, response.headers, response.body, response.body_sha256, recording.total_ms,
        stage_ms(timing, replacing),
    )  # fmt: skip


class ShadowRunner:
    """The plan's instances, running in this process with private in-memory stores."""

    def __init__(self, shadow: ShadowPlan) -> None:
        self.plan = shadow
        runtime = MemoryRuntime()
        self.plugins: dict[str, Plugin[Any]] = {}
        for name, item in shadow.instances.items():
            plugin = item.cls(item.config, instance=name)
            plugin.bind(runtime)
            self.plugins[name] = plugin

    async def start(self) -> None:
        for plugin in self.plugins.values():
            await plugin.startup()

    async def stop(self) -> None:
        for plugin in self.plugins.values():
            await plugin.shutdown()

    async def run(self, envelope: Envelope) -> Observed:
        """Run ``envelope`` through the shadow itinerary; the response as the client would have got it."""
        started = time.perf_counter()
        with credentials.serving(envelope):
            while (stage := envelope.current) is not None:
                item = self.plan.instances[stage.instance]
                outcome = await execute(
                    self.plugins[stage.instance], stage.phase, envelope.to_json(), envelope, item.timeout, REPLICA, 1
                )
                envelope = outcome.envelope
        total_ms = (time.perf_counter() - started) * 1000
        response = client_response(envelope, envelope.request_id, total_ms, self.plan.expose_errors)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.raw_headers]
        spent = [t.ms for t in envelope.timings if t.stage.rsplit(".", 1)[0] == self.plan.against]
        return Observed.of(response.status_code, headers, bytes(response.body), round(total_ms, 3),
                           round(sum(spent), 3) if spent else None)  # fmt: skip
