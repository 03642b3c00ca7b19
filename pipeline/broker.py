"""Connecting to NATS, and the one place that declares Backworks' streams and KV buckets.

Services other than the declaring one only attach: they wait for the streams to exist and never
rewrite them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

from backworks.contracts.blueprint import DEFAULT_EVENTS_MAX_AGE_S, NatsSettings
from backworks.contracts.names import (
    BREAKERS_BUCKET,
    CACHE_BUCKET,
    CONFIG_BUCKET,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    PIPELINE_STREAM,
    PIPELINE_SUBJECTS,
    RATELIMIT_BUCKET,
    RECORD_BUCKET,
    RECORD_STREAM,
    RECORD_SUBJECTS,
    REGISTRY_BUCKET,
    SPLITS_BUCKET,
)
from backworks.pipeline.errors import BrokerUnavailable, ReplicasUnavailable
from backworks.pipeline.nats_auth import NatsAuth, resolve
from backworks.pipeline.permissions import ADMIN

log = structlog.get_logger("backworks.broker")

CONNECT_TIMEOUT = 2.0
FIRST_CONNECT_PATIENCE = 15.0
"""Seconds the first connection may take, every server tried again and again: a broker that is not there by then
is a clear error (a wrong URL, a stopped broker), not a command that hangs. After the first success a client
reconnects forever."""
PING_INTERVAL = 1.0
MAX_PINGS = 2
RECONNECT_GRACE = 1.0
"""Seconds a caller may wait for a reconnecting client (``reconnected``): a cluster node restarting hands its
clients to the next seed within a fraction of that."""
RECONNECT_POLL = 0.05
DUPLICATE_WINDOW = 120.0
"""Seconds JetStream remembers a ``Nats-Msg-Id``: longer than any request deadline."""
PIPELINE_MAX_AGE = 3600.0
EVENTS_MAX_AGE = DEFAULT_EVENTS_MAX_AGE_S
"""Defaults of the blueprint's ``events:`` section, for a declare without a blueprint."""
UNLIMITED = -1
"""JetStream's value for a stream limit that is not set."""
DLQ_MAX_AGE = 14 * 24 * 3600.0
REGISTRY_TTL = 30.0
"""Registry entries older than this are purged; liveness itself is judged from heartbeats (see liveness.py)."""
ATTACH_TIMEOUT = 30.0
CACHE_MAX_AGE = 24 * 3600.0
"""The ``cache`` plugin's longest ``ttl_s``: entries nobody overwrote are purged after it."""
RECORD_MAX_AGE = 7 * 24 * 3600.0
RECORD_MAX_BYTES = 256 * 1024 * 1024
"""``BW_RECORD`` keeps a week of recordings and at most this many bytes (the oldest go first): recordings are
sampled copies of whole requests, and a forgotten ``record --sample 100%`` must not fill the broker's disk."""
RECORD_SWITCH_MAX_AGE = 24 * 3600.0
"""A recording switch nobody turned off is purged after a day (each also carries its own end, ``until``)."""
RATELIMIT_MAX_AGE = 2 * 24 * 3600.0
"""Longer than the ``rate-limit`` plugin's longest window (a day, plus 1/20): idle callers' keys are purged."""
REFUSED = "authorization violation"
"""What nats-server answers to credentials it does not accept (lower-cased)."""


async def connect(
    servers: list[str],
    name: str,
    *,
    identity: str = ADMIN,
    settings: NatsSettings | None = None,
    auth: NatsAuth | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    patience: float = FIRST_CONNECT_PATIENCE,
) -> Client:
    """Connect as ``identity``, retrying forever after the first success so a restarting broker never kills the service.

    The first connection gives up after ``patience`` seconds with ``BrokerUnavailable`` naming the servers.

    The credentials are ``auth``, else found for ``identity`` by ``nats_auth.resolve`` (environment, the
    blueprint's ``settings``, the state directory's keyring for the embedded broker).
    """
    auth = auth or resolve(identity, servers, settings)

    last_error: list[str] = []

    async def error_cb(exc: Exception) -> None:
        if not connected and REFUSED in str(exc).lower():
            # Raised out of nats-py's first-connect loop, which would otherwise try the same credentials forever.
            raise exc
        if not connected:
            last_error[:] = [str(exc) or type(exc).__name__]
            return  # said once, in the error below, if no server answers in time
        log.warning("nats error", error=str(exc) or type(exc).__name__)

    async def disconnected_cb() -> None:
        if client.is_closed or client.is_draining:
            return  # our own shutdown
        log.warning("nats disconnected")

    async def reconnected_cb() -> None:
        log.info("nats reconnected")
        if on_reconnect:
            await on_reconnect()

    client = Client()
    # nats-py annotates these timeouts as int but takes seconds as float.
    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": CONNECT_TIMEOUT,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "allow_reconnect": True,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        "pending_size": 64 * 1024 * 1024,
        # A server that stops answering (frozen, partitioned) holds its TCP connection open: without pings
        # nats-py would notice after 2 x 120 s. Detect it within ~PING_INTERVAL * (MAX_PINGS + 1) and fail over.
        "ping_interval": PING_INTERVAL,
        "max_outstanding_pings": MAX_PINGS,
        **auth.options(),
    }
    connected = False
    try:
        # nats-py's first connect also follows max_reconnect_attempts (forever): bounded here.
        await asyncio.wait_for(client.connect(**options), patience)
        connected = True
    except Exception as exc:
        await client.close()  # a refused first connection leaves its socket open otherwise
        if isinstance(exc, TimeoutError):
            seen = f" (last error: {last_error[0]})" if last_error else ""
            reason: object = f"no server answered within {patience:g} s{seen}"
        else:
            reason = exc or type(exc).__name__
        raise BrokerUnavailable(
            f"cannot connect to NATS at {', '.join(servers)} as {auth.describe()}: {reason}"
        ) from exc
    return client


async def release(client: Client) -> None:
    """Let go of a service's connection at shutdown: drained when connected (pending publishes out, subscriptions
    ended), closed when not (the broker down, the client reconnecting). A connection the broker dropped meanwhile is
    closed as it is, not an error: a service stopping while its broker is away still stops cleanly."""
    try:
        if client.is_connected:
            await client.drain()
        else:
            await client.close()
    except (ConnectionError, NatsError, TimeoutError) as exc:
        log.info("nats connection closed uncleanly at shutdown", error=repr(exc) or type(exc).__name__)
        with contextlib.suppress(ConnectionError, NatsError, TimeoutError):
            await client.close()


def _stream_configs(
    storage: StorageType, replicas: int, events_max_age: float, events_max_bytes: int | None
) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=PIPELINE_STREAM,
            subjects=[PIPELINE_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW,
            max_age=PIPELINE_MAX_AGE,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            max_age=events_max_age,
            max_bytes=UNLIMITED if events_max_bytes is None else events_max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW,
        ),
        StreamConfig(
            name=DLQ_STREAM,
            subjects=[DLQ_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=DLQ_MAX_AGE,
        ),
        StreamConfig(
            name=RECORD_STREAM,
            subjects=[RECORD_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=RECORD_MAX_AGE,
            max_bytes=RECORD_MAX_BYTES,
            discard=DiscardPolicy.OLD,
        ),
    ]


def _bucket_configs(storage: StorageType, replicas: int) -> list[KeyValueConfig]:
    buckets = [
        KeyValueConfig(bucket=BREAKERS_BUCKET, history=1, storage=storage, replicas=replicas),
        KeyValueConfig(bucket=REGISTRY_BUCKET, history=1, ttl=REGISTRY_TTL, storage=storage, replicas=replicas),
        KeyValueConfig(bucket=CONFIG_BUCKET, history=5, storage=StorageType.FILE, replicas=replicas),
        KeyValueConfig(bucket=CACHE_BUCKET, history=1, ttl=CACHE_MAX_AGE, storage=storage, replicas=replicas),
        KeyValueConfig(bucket=RATELIMIT_BUCKET, history=1, ttl=RATELIMIT_MAX_AGE, storage=storage, replicas=replicas),
        KeyValueConfig(bucket=RECORD_BUCKET, history=1, ttl=RECORD_SWITCH_MAX_AGE, storage=storage, replicas=replicas),
        KeyValueConfig(bucket=SPLITS_BUCKET, history=5, storage=StorageType.FILE, replicas=replicas),
    ]
    return buckets


NOT_CLUSTERED = 10074
"""JetStream's error code for ``replicas > 1 not supported in non-clustered mode``."""
INSUFFICIENT_RESOURCES = 10023
"""JetStream's error code when the cluster has less room than the replicas asked for."""
NO_SUITABLE_PEERS = 10005
"""JetStream's error code when the cluster has fewer JetStream nodes than the replicas asked for."""
PLACEMENT_WAIT = 10.0
"""Seconds ``declare`` tries again while JetStream finds no peers for the replicas: a cluster that has just elected
its meta leader learns about its other nodes a moment later."""
PLACEMENT_POLL = 0.5


async def declare(
    js: JetStreamContext,
    *,
    storage: str = "file",
    replicas: int = 1,
    events_max_age: float = EVENTS_MAX_AGE,
    events_max_bytes: int | None = None,
) -> None:
    """Create (or bring up to date) every stream and KV bucket. Called only by the owning component.

    Raises ``ReplicasUnavailable`` when ``replicas`` exceeds what the broker can hold (a single node asked
    for R3, or a cluster with fewer JetStream nodes than replicas).
    """
    give_up = asyncio.get_running_loop().time() + PLACEMENT_WAIT
    while True:
        try:
            await _declare(js, storage, replicas, events_max_age, events_max_bytes)
            return
        except APIError as exc:
            forming = exc.err_code == NO_SUITABLE_PEERS and asyncio.get_running_loop().time() < give_up
            if not forming:
                _explain(exc, replicas)
                raise
        await asyncio.sleep(PLACEMENT_POLL)  # a cluster that just started: its leader may not know every peer yet


def _explain(exc: APIError, replicas: int) -> None:
    """Raise ``ReplicasUnavailable`` for JetStream's answers that mean the cluster cannot hold ``replicas``."""
    if exc.err_code == NOT_CLUSTERED:
        raise ReplicasUnavailable(
            f"the blueprint asks for nats.replicas: {replicas}, but the NATS server is a single node (not "
            "clustered): set replicas: 1, or run a cluster (`backworks nats --cluster 3` on one machine, "
            "ops/nats/ for real hosts) and pass its seed URLs with --nats"
        ) from None
    if exc.err_code in (INSUFFICIENT_RESOURCES, NO_SUITABLE_PEERS):
        raise ReplicasUnavailable(
            f"the NATS cluster cannot hold {replicas} replicas ({exc.description}): it needs at least "
            f"{replicas} JetStream nodes with free storage; lower nats.replicas or add nodes"
        ) from None


async def _declare(
    js: JetStreamContext, storage: str, replicas: int, events_max_age: float, events_max_bytes: int | None
) -> None:
    kind = StorageType.FILE if storage == "file" else StorageType.MEMORY
    for config in _stream_configs(kind, replicas, events_max_age, events_max_bytes):
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code == NO_SUITABLE_PEERS:
                raise
            # Exists with another configuration: update what can be updated (not storage or retention).
            current = await js.stream_info(str(config.name))
            config.storage = current.config.storage
            config.retention = current.config.retention
            await js.update_stream(config)
            log.info("stream updated", stream=config.name)
    for bucket in _bucket_configs(kind, replicas):
        try:
            await js.create_key_value(bucket)
        except BadRequestError:
            log.info("bucket exists with another configuration; kept", bucket=bucket.bucket)


async def apply_event_limits(js: JetStreamContext, max_age: float, max_bytes: int | None) -> None:
    """Give ``BW_EVENTS`` the blueprint's limits (``events.max_age_s``, ``events.max_bytes``) if it has others.

    ``backworks up`` calls it after the streams exist, whoever declared them (an embedded broker declares with
    the defaults)."""
    info = await js.stream_info(EVENTS_STREAM)
    config = info.config
    wanted = UNLIMITED if max_bytes is None else max_bytes
    if config.max_age == max_age and (config.max_bytes or UNLIMITED) == wanted:
        return
    config.max_age, config.max_bytes, config.discard = max_age, wanted, DiscardPolicy.OLD
    await js.update_stream(config)
    log.info("event stream limits applied", stream=EVENTS_STREAM, max_age_s=max_age, max_bytes=max_bytes)


async def attach(js: JetStreamContext, stream: str = PIPELINE_STREAM, timeout: float = ATTACH_TIMEOUT) -> None:
    """Wait until ``stream`` exists (declared by the owner), without creating it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.stream_info(stream)
            return
        except NotFoundError:
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerUnavailable(
                    f"stream {stream} does not exist after {timeout:.0f} s: run `backworks up`, `backworks nats` "
                    "or `backworks declare` to create it"
                ) from None
            log.info("waiting for stream to be declared", stream=stream)
            await asyncio.sleep(0.5)
        except Exception as exc:  # timeouts while the broker restarts
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerUnavailable(f"cannot reach JetStream for stream {stream}: {exc!r}") from exc
            await asyncio.sleep(0.5)


def jetstream(client: Client, timeout: float = 2.0) -> JetStreamContext:
    context: JetStreamContext = client.jetstream(timeout=timeout)
    return context


def describe(client: Client) -> dict[str, Any]:
    return {
        "connected": client.is_connected,
        "url": str(client.connected_url.geturl()) if client.connected_url else None,
    }


async def reconnected(client: Client, grace: float = RECONNECT_GRACE) -> bool:
    """Whether ``client`` is connected, waiting up to ``grace`` seconds while it is reconnecting (one node of a
    cluster restarting: a request waits a moment for the next seed instead of failing with "not reachable").

    nats-py's reconnect passes through CONNECTING while it shakes hands with the next server: that is still a
    reconnect under way (measured: a gateway that stopped waiting there answered 503 5 ms after its node left)."""
    if client.is_connected:
        return True
    give_up = time.monotonic() + grace
    while (client.is_reconnecting or client.is_connecting) and time.monotonic() < give_up:
        await asyncio.sleep(RECONNECT_POLL)
        if client.is_connected:
            return True
    return client.is_connected
