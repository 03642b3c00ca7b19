"""Co-located stages: the plugin instances of one ``colocate:`` group served by one process.

Every member keeps what it has as its own process: its plugin object and config, time limit, criticality,
breaker, metrics, counters and heartbeat (``StageHost`` per member, so liveness and health see each instance
live), and it consumes its own durables, so a member can be entered directly (after an optional stage before it
was skipped, or on the response path after a stage outside the group). What changes is the hand-off: when a
member is done and the next stage the gate lets through (``gate.advance``, the same skips for an open breaker or
an absent instance as between processes) belongs to the group, that member runs at once, in memory, on the same
envelope; only a stage outside the group, or the reply, is published (``Forwarder.forward``), and only then is the
message the group was entered with acknowledged. Members need not be consecutive in a chain: a stage outside the
group between two members is published to as usual, and the group is entered again at the next member's durable.
A group runs as many replicas as its most replicated member asks for (``local.up``); each replica serves every member.

A crash of the group process loses nothing: the message it was entered with is not acknowledged, so JetStream
redelivers it and the group runs again from that stage; the publish to the stage after the group carries the
same ``Nats-Msg-Id`` as before (envelope id and cursor), so JetStream drops a repeat, and the gateway answers
its client once. What co-location gives up is isolation between the members: a hang that blocks the event loop,
a leak or a crash in one of them is felt by all (the group's process limits are the members' common ones).

Forwarders handing work to a co-located stage expect it held for the time limits of the whole run of group stages
that follows (``stalls.expected_hold_ms``), so the stall watch does not route around a group that is working.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.blueprint import BreakerSettings, NatsSettings
from backworks.contracts.envelope import Envelope, Stage, StageError
from backworks.contracts.names import Phase
from backworks.contracts.types import FailureKind
from backworks.pipeline import audit, broker
from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance
from backworks.pipeline.errors import RevisionError
from backworks.pipeline.executor import execute
from backworks.pipeline.forwarder import PUBLISH_TIMEOUT, Forwarder
from backworks.pipeline.lifecycle import freeze_startup_objects
from backworks.pipeline.permissions import group_identity
from backworks.pipeline.settlement import Settlement
from backworks.pipeline.stagehost import EXHAUSTED_EXIT, OUT_OF_MEMORY_EXIT, InProgress, StageHost, delivery_count

log = structlog.get_logger("backworks.colocation")


@dataclass(frozen=True)
class Entry:
    """The message a group was entered with, for the members it then runs in memory."""

    msg: Msg
    ack_wait: float
    """The entered durable's ack deadline: in-memory work longer than a quarter of it sends in-progress beats."""

    @property
    def attempt(self) -> int:
        return delivery_count(self.msg.reply)


_entry: ContextVar[Entry | None] = ContextVar("backworks_colocation_entry", default=None)
"""Set for the task working on one message (``PullConsumer`` runs each in its own task)."""


class MemberHost(StageHost):
    """A ``StageHost`` whose hand-off goes through its group's forwarder, which knows the message it came from."""

    async def decide(self, phase: Phase, msg: Msg) -> Settlement:
        token = _entry.set(Entry(msg, self.ack_wait))
        try:
            return await super().decide(phase, msg)
        finally:
            _entry.reset(token)


async def run_member(
    host: StageHost, phase: Phase, envelope: Envelope, attempt: int
) -> tuple[Envelope, list[StageError]]:
    """Run ``host``'s stage on an envelope handed over in memory: ``StageHost.decide``'s run step, without a message.

    The executor restores the envelope as the stage received it when the hook fails, so it gets that as bytes.
    """
    try:  # the plugin object of the envelope's blueprint revision, as between processes
        version = await host.versions.get(envelope.revision)
    except RevisionError as exc:
        message = f"cannot serve blueprint revision {envelope.revision}: {exc}"
        return envelope, [envelope.fail_stage(FailureKind.INVALID, message, skip=False)]
    decided = audit.noted(envelope) if host.audits else 0
    host.versions.begin(version)
    try:
        outcome = await execute(
            version.plugin, phase, envelope.to_json(), envelope, version.instance.timeout, host.replica, attempt,
            host.breakers,
        )  # fmt: skip
    finally:
        host.versions.end(version)
    host.processed += 1
    if host.audits and not outcome.failure:
        audit.publish_decisions(host.forwarder.events, outcome.envelope, decided)
    if not outcome.failure:
        return outcome.envelope, []
    host.failed += 1
    if outcome.exhausted:
        host.exhausted_resource = outcome.exhausted
        host.exhausted.set()
    return outcome.envelope, [outcome.envelope.errors[-1]]


class GroupForwarder(Forwarder):
    """The group's one forwarder: runs the next stages in memory while they belong to the group, then hands on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members: dict[str, StageHost] = {}
        self.in_memory = 0
        """Hand-offs made in memory (stages run without a publish)."""

    async def forward(
        self,
        envelope: Envelope,
        on_retry: Callable[[], Awaitable[None]] | None = None,
        failures: Sequence[StageError] = (),
    ) -> Stage | None:
        recorded = list(failures)
        entry = _entry.get()
        keeper: InProgress | None = None
        try:
            while True:
                nxt, skipped = self.gate.advance(envelope)
                recorded += skipped
                member = self.members.get(nxt.instance) if nxt is not None else None
                if nxt is None or member is None:
                    break
                if envelope.remaining() <= 0:
                    # As a stage host drops an envelope that waited past its deadline: the client had its 504.
                    member.dropped[FailureKind.EXPIRED.value] += 1
                    reason = "deadline passed before this co-located stage; dropped (the client had its 504)"
                    recorded.append(envelope.fail_stage(FailureKind.EXPIRED, reason, skip=False))
                    await self._record(envelope, recorded)
                    return None
                if keeper is None and entry is not None:
                    keeper = InProgress(entry.msg, entry.ack_wait / 4)
                self.in_memory += 1
                envelope, failed = await run_member(member, nxt.phase, envelope, entry.attempt if entry else 1)
                recorded += failed
        finally:
            if keeper is not None:
                keeper.cancel()
        return await super().forward(envelope, on_retry, recorded)


class GroupHost:
    """One replica of a co-location group: a ``MemberHost`` per member instance, one shared ``GroupForwarder``."""

    def __init__(
        self,
        group: str,
        members: Sequence[ResolvedInstance],
        client: Client,
        *,
        breaker_settings: dict[str, BreakerSettings] | None = None,
        **options: Any,
    ) -> None:
        self.group = group
        self.client = client
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        settings = breaker_settings or {member.name: member.spec.breaker for member in members}
        js = broker.jetstream(client, timeout=PUBLISH_TIMEOUT)
        owned = frozenset(member.name for member in members)
        self.forwarder = GroupForwarder(
            client, js, settings, self.replica, publish_timeout=PUBLISH_TIMEOUT, owned=owned
        )
        self.hosts = [
            MemberHost(member, client, breaker_settings=settings, forwarder=self.forwarder, **options)
            for member in members
        ]
        self.forwarder.members = {host.instance.name: host for host in self.hosts}

    @property
    def exhausted(self) -> StageHost | None:
        """The member whose plugin used up a resource of the process, if any: the process must be replaced."""
        return next((host for host in self.hosts if host.exhausted.is_set()), None)

    async def start(self) -> None:
        await self.forwarder.start()
        for host in self.hosts:
            await host.start()
        log.info("co-located group ready", group=self.group, members=[h.instance.name for h in self.hosts])

    async def on_reconnect(self) -> None:
        for host in self.hosts:
            await host.on_reconnect()

    async def stop(self) -> None:
        for host in self.hosts:
            await host.stop()
        await self.forwarder.stop()


def members_of(loaded: LoadedBlueprint, group: str) -> list[ResolvedInstance]:
    """The instances of ``group`` (``colocate: <group>``), in blueprint order."""
    return [loaded.instances[name] for name in loaded.model.groups().get(group, [])]


async def serve_group(
    group: str,
    members: Sequence[ResolvedInstance],
    servers: list[str],
    stop: asyncio.Event,
    settings: NatsSettings | None = None,
    **options: Any,
) -> int:
    """Run one replica of a co-location group until ``stop`` is set; returns the process exit code.

    It connects as the group's identity (``group-<group>``): each member's consume rights, every exit's publish.
    """
    host: GroupHost | None = None

    async def reconnected() -> None:
        if host is not None:
            await host.on_reconnect()

    client = await broker.connect(
        servers,
        name=f"backworks-serve-{group}",
        identity=group_identity(group),
        settings=settings,
        on_reconnect=reconnected,
    )
    host = GroupHost(group, members, client, **options)
    code = 0
    try:
        await host.start()
        freeze_startup_objects()
        waits = [asyncio.ensure_future(member.exhausted.wait()) for member in host.hosts]
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({*waits, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if (spent := host.exhausted) is not None:
            resource = spent.exhausted_resource
            log.error(
                f"plugin exhausted the group's {resource}; exiting to be restarted",
                group=group,
                instance=spent.instance.name,
            )
            code = EXHAUSTED_EXIT.get(resource, OUT_OF_MEMORY_EXIT)
        for waiting in [*waits, stopped]:
            waiting.cancel()
    finally:
        await host.stop()
        await broker.release(client)
    return code
