"""A planned hand-over of one NATS node: every Backworks stream, consumer and KV bucket led by it is led elsewhere
before it stops, so no request waits for an election.

A node that stops (SIGTERM) steps its raft groups down itself, but only as it shuts down: hand-offs that reach a
leader just then wait for the next one, some past a stage's time limit. Asking first
(``$JS.API.STREAM.LEADER.STEPDOWN.<stream>``, ``$JS.API.CONSUMER.LEADER.STEPDOWN.<stream>.<consumer>``; a KV
bucket is the stream ``KV_<bucket>``) moves each group while the node still answers, and ``step_down`` returns
once no Backworks group is led by it any more (another election could hand one back: it asks again until then).

This is ``backworks nats stepdown NODE``; ``LocalCluster.restart`` does it, then stops the node (SIGTERM: its
clients reconnect to the others at once) and starts it again. Lame duck mode is not part of it: a node in lame duck
mode stops its JetStream at once but keeps its clients for seconds, and the KV watches and heartbeat writes that went
through it fall silent meanwhile (measured: a rolling restart answered 147-315 requests "no live replica").
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from backworks.local.errors import NotReady, UnknownNode
from backworks.local.streams import STREAMS
from backworks.pipeline import broker
from backworks.pipeline.nats_auth import NatsAuth

STEPDOWN_TIMEOUT = 30.0
"""Seconds ``step_down`` waits for every group to be led elsewhere."""
REQUEST_TIMEOUT = 2.0
"""Seconds one JetStream API request (info or step-down) may take."""
POLL = 0.2
"""Seconds between two looks at who leads what, while leaders move."""
STREAM_STEPDOWN = "$JS.API.STREAM.LEADER.STEPDOWN.{stream}"
CONSUMER_STEPDOWN = "$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"


@dataclass(frozen=True)
class Group:
    """A replicated JetStream group (a stream, or a consumer of one) and the node leading it."""

    stream: str
    consumer: str | None
    leader: str | None

    @property
    def label(self) -> str:
        return self.stream if self.consumer is None else f"{self.stream} > {self.consumer}"

    @property
    def subject(self) -> str:
        if self.consumer is None:
            return STREAM_STEPDOWN.format(stream=self.stream)
        return CONSUMER_STEPDOWN.format(stream=self.stream, consumer=self.consumer)


async def groups(js: JetStreamContext) -> list[Group]:
    """Every declared, replicated Backworks stream and each of its replicated consumers, with its leader (None while
    it has none); on a single server, none."""
    return (await _survey(js))[0]


async def _survey(js: JetStreamContext) -> tuple[list[Group], set[str]]:
    """``groups``, and the names of the nodes holding a replica of any of them."""
    found: list[Group] = []
    nodes: set[str] = set()
    for stream in STREAMS:
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            continue
        if info.cluster is None or not info.cluster.replicas:  # one copy (a single server, R1): nothing to move
            continue
        found.append(Group(stream, None, info.cluster.leader))
        nodes |= {peer.name for peer in info.cluster.replicas if peer.name}
        nodes |= {info.cluster.leader} if info.cluster.leader else set()
        for consumer in await js.consumers_info(stream):
            name = consumer.name or consumer.config.durable_name
            # A KV watch's ordered consumer has one copy: it cannot move, its client makes a new one elsewhere.
            if name and consumer.cluster is not None and consumer.cluster.replicas:
                found.append(Group(stream, name, consumer.cluster.leader))
    return found, nodes


async def _ask(client: Client, group: Group) -> None:
    """Ask ``group``'s leader to step down; an error answer (no longer leader, gone meanwhile) is left to the
    next look, which sees where the group is led."""
    try:
        await client.request(group.subject, b"", timeout=REQUEST_TIMEOUT)
    except (NatsError, TimeoutError):
        return


async def move_leaders(client: Client, node: str, timeout: float = STEPDOWN_TIMEOUT) -> list[str]:
    """Step down every Backworks group ``node`` leads and wait until none is led by it; returns their labels.

    Raises ``NotReady`` when some are still led by ``node`` (or leaderless) after ``timeout`` seconds, and
    ``UnknownNode`` when no replicated Backworks stream has a replica on ``node``.
    """
    js = broker.jetstream(client)
    deadline = time.monotonic() + timeout
    moved: list[str] = []
    while True:
        try:
            current, nodes = await _survey(js)
        except (NatsError, TimeoutError) as exc:  # a group electing: look again
            last = f"{type(exc).__name__}: {exc}"
            waiting = True
        else:
            if current and node not in nodes:
                raise UnknownNode(
                    f"no replicated Backworks stream has a replica on a NATS node called {node!r} (its nodes: "
                    f"{', '.join(sorted(nodes))}); give the node's server_name, as `backworks nats status` shows"
                )
            here = [group for group in current if group.leader == node]
            leaderless = [group for group in current if group.leader is None]
            for group in here:
                if group.label not in moved:
                    moved.append(group.label)
            await asyncio.gather(*(_ask(client, group) for group in here))
            waiting = bool(here or leaderless)
            last = "still led by {}: {}".format(node, ", ".join(g.label for g in here)) if here else ""
            if leaderless:
                last += ("; " if last else "") + "no leader yet: " + ", ".join(g.label for g in leaderless)
        if not waiting:
            return moved
        if time.monotonic() > deadline:
            raise NotReady(
                f"the leaders did not move off NATS node {node} within {timeout:.0f} s ({last}); "
                "is a quorum of the other nodes up and current (`backworks nats status`)?"
            )
        await asyncio.sleep(POLL)


async def step_down(
    servers: list[str], node: str, timeout: float = STEPDOWN_TIMEOUT, auth: NatsAuth | None = None
) -> list[str]:
    """``move_leaders`` on a fresh admin connection to ``servers`` (what ``backworks nats stepdown`` runs)."""
    client = await broker.connect(servers, name="backworks-stepdown", auth=auth)
    try:
        return await move_leaders(client, node, timeout)
    finally:
        await client.close()


def describe(moved: list[str], node: str) -> str:
    """The one line ``backworks nats stepdown`` prints."""
    if not moved:
        return f"{node} led no Backworks stream or consumer"
    return f"moved {len(moved)} leader(s) off {node}: {', '.join(moved)}"


def as_json(moved: list[str], node: str) -> str:
    return json.dumps({"node": node, "moved": moved})
