"""The state of Backworks' streams on a broker: messages, and on a cluster the leader and each replica's lag.

KV buckets are streams too (``KV_<bucket>``), so they are listed beside the pipeline, event and
dead-letter streams. ``backworks nats status`` prints this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nats.js.errors import NotFoundError

from backworks.contracts.names import ALL_BUCKETS, DLQ_STREAM, EVENTS_STREAM, PIPELINE_STREAM, RECORD_STREAM
from backworks.pipeline import broker

BUCKETS = ALL_BUCKETS
STREAMS = (PIPELINE_STREAM, EVENTS_STREAM, DLQ_STREAM, RECORD_STREAM, *(f"KV_{bucket}" for bucket in BUCKETS))


@dataclass(frozen=True)
class Peer:
    """A replica of a stream other than its leader, as the leader sees it."""

    name: str
    current: bool
    lag: int = 0
    offline: bool = False


@dataclass(frozen=True)
class StreamState:
    name: str
    declared: bool
    messages: int = 0
    bytes: int = 0
    replicas: int = 1
    leader: str | None = None
    peers: list[Peer] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def stream_states(servers: list[str]) -> list[StreamState]:
    """Every Backworks stream on ``servers`` (missing ones say ``declared: False``)."""
    client = await broker.connect(servers, name="backworks-status")
    try:
        js = broker.jetstream(client)
        states: list[StreamState] = []
        for name in STREAMS:
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                states.append(StreamState(name, declared=False))
                continue
            cluster = info.cluster
            peers = [
                Peer(peer.name or "?", bool(peer.current), int(peer.lag or 0), bool(peer.offline))
                for peer in (cluster.replicas or [] if cluster else [])
            ]
            states.append(
                StreamState(
                    name,
                    declared=True,
                    messages=info.state.messages,
                    bytes=info.state.bytes,
                    replicas=info.config.num_replicas or 1,
                    leader=cluster.leader if cluster else None,
                    peers=peers,
                )
            )
        return states
    finally:
        await client.drain()
