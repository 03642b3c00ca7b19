"""A one-shot read of the ``bw_registry`` bucket: which replicas are live right now.

``backworks.pipeline.liveness.LivenessView`` keeps a running service's view fresh with a watch; the CLI and the SDK only
need a snapshot. A replica counts as live when its last heartbeat was sent within ``LIVENESS_TTL``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import nats
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from pydantic import ValidationError

from backworks.contracts.names import REGISTRY_BUCKET
from backworks.contracts.registry import ReplicaInfo
from backworks.local.ports import accepts
from backworks.local.servers import address
from backworks.pipeline import kvwatch, nats_auth
from backworks.pipeline.errors import BrokerUnavailable
from backworks.pipeline.liveness import LIVENESS_TTL
from backworks.pipeline.permissions import ADMIN

CENSUS_TIMEOUT = 2.0


async def read(js: JetStreamContext) -> list[ReplicaInfo]:
    """Every readable entry of the registry bucket (live or not)."""
    try:
        kv = await js.key_value(REGISTRY_BUCKET)
        keys = await kvwatch.keys(js, REGISTRY_BUCKET)
    except NotFoundError:
        return []
    found: list[ReplicaInfo] = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        if not entry.value:
            continue
        try:
            found.append(ReplicaInfo.model_validate_json(entry.value))
        except ValidationError:
            continue
    return found


def live(replicas: list[ReplicaInfo], now: float | None = None, ttl: float = LIVENESS_TTL) -> list[ReplicaInfo]:
    """The replicas whose last heartbeat is recent enough."""
    now = time.time() if now is None else now
    return [info for info in replicas if now - info.sent_at <= ttl]


def per_plugin(replicas: list[ReplicaInfo]) -> Counter[str]:
    """Live replica count per plugin type."""
    return Counter(info.plugin for info in replicas)


def per_plugin_version(replicas: list[ReplicaInfo]) -> dict[str, dict[str, int]]:
    """Live replica count per plugin type and plugin version."""
    found: dict[str, Counter[str]] = {}
    for info in replicas:
        found.setdefault(info.plugin, Counter())[info.version] += 1
    return {plugin: dict(counts) for plugin, counts in found.items()}


async def snapshot(servers: list[str], timeout: float = CENSUS_TIMEOUT) -> list[ReplicaInfo]:
    """Connect once, read the live replicas, disconnect; ``BrokerUnavailable`` when NATS cannot be reached."""
    if not any(accepts(*address(server)) for server in servers):
        raise BrokerUnavailable(f"cannot connect to NATS at {', '.join(servers)}: nothing accepts connections there")

    async def quiet(exc: Exception) -> None:
        """The failure is raised below; nats-py would otherwise log it too."""

    connecting = nats.connect(
        servers=servers,
        connect_timeout=timeout,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        name="backworks-census",
        error_cb=quiet,
        **nats_auth.resolve(ADMIN, servers).options(),
    )
    try:
        # nats-py keeps retrying a refused first connection even without reconnects: bound it.
        client = await asyncio.wait_for(connecting, timeout)
    except TimeoutError:
        raise BrokerUnavailable(f"cannot connect to NATS at {', '.join(servers)} within {timeout:.1f} s") from None
    except Exception as exc:
        raise BrokerUnavailable(f"cannot connect to NATS at {', '.join(servers)}: {exc or type(exc).__name__}") from exc
    try:
        return live(await read(client.jetstream(timeout=timeout)))
    finally:
        await client.close()
