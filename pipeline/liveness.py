"""Who serves which stage: replicas heartbeat into ``bw_registry``; anyone can watch the bucket.

Liveness is judged from when a heartbeat *arrived* (the watcher's clock), so clock skew between
machines does not matter. A replica that stops cleanly deletes its key at once; one that is killed
goes stale after ``LIVENESS_TTL``.

Absence is only known after watching: a view that (re)started its watch less than ``LIVENESS_TTL`` ago has
not yet had the chance to hear every live replica's heartbeat, so it does not call an instance absent
(``absent``). That covers a service starting beside stages that have just started (the first requests are not
degraded) and a service whose watch was rebuilt after the broker restarted. The watch is rebuilt at once when
the NATS client reconnects (nats-py's ordered consumer does not survive a broker restart), and when it has
been silent for ``WATCH_SILENCE``.

A view that has heard nothing at all for ``LIVENESS_TTL`` (no heartbeat from any replica of any instance)
although replicas were live when it last heard is deaf rather than surrounded by the dead: its watch broke
(nats-py's ordered consumer stops when the bucket's stream changes leader on a cluster), and it calls nobody
absent until it hears again. The price: when every replica of every instance dies at once, forwarders send work
that waits for its deadline instead of failing at once with "no live replica".

A replica whose server stopped answering is stranded, not gone: on a cluster, a node frozen, partitioned or
killed silences every replica connected to it until they fail over to another node (each pings its server every
``broker.PING_INTERVAL``, gives up after ``broker.MAX_PINGS`` unanswered pings and reconnects: ~3 s). Each
heartbeat names the server its replica is connected to; as soon as a replica is late (``LATE_AFTER``), the view
asks that server whether it answers (``serverprobe``, in the background; only servers this process's own client
knows, its seeds and the ones the cluster told it about, so a heartbeat cannot make every watcher connect to an
address of its choosing). While it does not, its silent replicas are stranded (``stranded``): for up to
``FAILOVER_GRACE`` after their last heartbeat their stage is not called absent, so work sent to it waits for them
instead of failing with "no live replica" (measured before: 37 such 503s in one partition). They are not live
(``live`` and ``count`` leave them out). A replica killed on a server that answers is gone after ``LIVENESS_TTL``,
as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from backworks.contracts.names import REGISTRY_BUCKET, registry_key
from backworks.contracts.registry import ReplicaInfo
from backworks.pipeline import kvwatch, serverprobe
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.liveness")

HEARTBEAT_INTERVAL = 0.5
BEAT_TIMEOUT = HEARTBEAT_INTERVAL
"""Seconds one heartbeat waits for the registry's acknowledgement. A put that a leaving cluster node swallowed
costs one interval, not the client's 1 s request timeout plus an interval: measured in a rolling restart, two
such puts left a single replica silent for ~2 s, past ``LIVENESS_TTL``, and the gateway answered "no live
replica" although it was working."""
LIVENESS_TTL = 1.75
"""A replica whose last heartbeat is older than this is considered gone."""
RETRY_DELAY = 0.5
WATCH_SILENCE = 2 * LIVENESS_TTL
"""Seconds without any registry update after which the watch is rebuilt. Replicas heartbeat every
``HEARTBEAT_INTERVAL``, so a silent watch is a broken one: nats-py's ordered consumer can stop for good when its
stream changed leader (its reset fails during the election and is never retried), leaving every replica looking
dead although it heartbeats."""
FORGET_AFTER = 60.0
RECONNECT_CHECK = 0.25
"""Seconds between checks of whether the NATS client reconnected (the watch is then rebuilt at once)."""
LATE_AFTER = 1.5 * HEARTBEAT_INTERVAL
"""Seconds without a heartbeat after which a replica's server is asked whether it answers: early enough that the
answer (``serverprobe.PROBE_TIMEOUT`` at most) is known before the replica's ``LIVENESS_TTL`` runs out."""
SERVER_CHECK_INTERVAL = 0.25
"""Seconds between looks for late replicas (and checks of their servers while they stay late)."""
FAILOVER_GRACE = 6.0
"""Seconds after its last heartbeat a replica whose server does not answer still counts as present: it notices
the silence after two unanswered pings of one second each, then reconnects to another node (about 3 s)."""


@dataclass(frozen=True)
class ServerCheck:
    """Whether a server greeted a probe, and when the probe was sent (monotonic)."""

    answers: bool
    at: float


@dataclass
class Seen:
    info: ReplicaInfo
    at: float
    """When its last heartbeat arrived (monotonic)."""
    first: float
    """When its first heartbeat arrived (monotonic)."""


class LivenessView:
    """Live replicas per instance, kept fresh by a KV watch on ``bw_registry``."""

    def __init__(self, js: JetStreamContext, check_servers: bool = True) -> None:
        self.js = js
        self.checking_servers = check_servers
        """Whether to ask the servers of late replicas if they answer (off: a replica is live or absent, no more)."""
        self.replicas: dict[str, dict[str, Seen]] = {}
        """instance -> registry key -> last heartbeat: forwarders ask per instance on every request."""
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.watching_since: float | None = None
        """When the current watch delivered its initial values (monotonic); None while it is being (re)built."""
        self.heard_at = 0.0
        """When the watch last delivered anything (monotonic)."""
        self.servers: dict[str, ServerCheck] = {}
        """Server (``host:port``) of late replicas -> the last check of whether it answers."""
        self._checks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch_forever(), name="liveness-watch")
        if self.checking_servers:
            self._checks = asyncio.create_task(self._check_servers_forever(), name="liveness-server-checks")

    async def stop(self) -> None:
        await cancel(self._checks)
        await cancel(self._task)

    def live(self, instance: str, now: float | None = None) -> list[ReplicaInfo]:
        now = time.monotonic() if now is None else now
        return [s.info for s in self.replicas.get(instance, {}).values() if now - s.at <= LIVENESS_TTL]

    def count(self, instance: str) -> int:
        return len(self.live(instance))

    def others_could_serve(self, instance: str, handed_at: float, now: float | None = None) -> bool:
        """Whether a replica other than the one holding an envelope handed to ``instance`` at ``handed_at`` (and
        held past its time limit) may serve it: two replicas that were there at the hand-off are live, or one
        is and another has stopped heartbeating since (the holder, frozen or dead, may be that one).

        A replica that started after the hand-off does not count: when the only replica dies holding an envelope
        and is restarted, the envelope that may have killed it is not handed to its successor."""
        now = time.monotonic() if now is None else now
        veterans = lapsed = 0
        for seen in self.replicas.get(instance, {}).values():
            if now - seen.at <= LIVENESS_TTL:
                veterans += seen.first <= handed_at
            elif handed_at - seen.at <= LIVENESS_TTL:
                lapsed += 1  # live at the hand-off, silent now
        return veterans >= 1 and veterans + lapsed >= 2

    def absent(self, instance: str, now: float | None = None) -> bool:
        """True when ``instance`` has no live replica and this view has watched long enough to know it."""
        now = time.monotonic() if now is None else now
        since = self.watching_since
        if since is None or now - since < LIVENESS_TTL or self._deaf(now):
            return False  # not watching long enough to know, or deaf (see the module docstring)
        # Asked before every hand-off: no list of the live replicas, only whether there is one.
        if any(now - seen.at <= LIVENESS_TTL for seen in self.replicas.get(instance, {}).values()):
            return False
        return not self.stranded(instance, now)

    def stranded(self, instance: str, now: float | None = None) -> bool:
        """Whether a replica of ``instance`` that stopped heartbeating less than ``FAILOVER_GRACE`` ago is connected
        to a server that did not answer when asked after its last heartbeat: it is failing over to another node."""
        now = time.monotonic() if now is None else now
        for seen in self.replicas.get(instance, {}).values():
            check = self.servers.get(seen.info.server)
            if check is not None and not check.answers and check.at > seen.at and now - seen.at <= FAILOVER_GRACE:
                return True
        return False

    def late_servers(self, now: float) -> set[str]:
        """Servers this process's client knows of replicas that have been silent for ``LATE_AFTER`` but not yet for
        ``FAILOVER_GRACE``."""
        known = self._known_servers()
        return {
            seen.info.server
            for by_key in self.replicas.values()
            for seen in by_key.values()
            if seen.info.server in known and LATE_AFTER < now - seen.at <= FAILOVER_GRACE
        }

    def _known_servers(self) -> set[str]:
        """``host:port`` of every server in this process's client's pool (its seeds and the discovered ones)."""
        client = getattr(self.js, "_nc", None)  # nats-py keeps its client there, with no public accessor
        pool = getattr(client, "servers", None) or []
        return {serverprobe.address(url) for url in pool} - {""}

    async def check_servers(self, now: float | None = None) -> None:
        """Ask every server of a late replica whether it answers (all at once); forget the others. A probe that
        failed in an unforeseen way is no answer either way: that server's replicas are not stranded."""
        now = time.monotonic() if now is None else now
        late = sorted(self.late_servers(now))
        results = await asyncio.gather(*(serverprobe.answers(server) for server in late), return_exceptions=True)
        checks = {
            server: ServerCheck(answered, now)
            for server, answered in zip(late, results, strict=True)
            if isinstance(answered, bool)
        }
        for server, check in checks.items():
            known = self.servers.get(server)
            if not check.answers and (known is None or known.answers):
                log.info("replicas' server does not answer: waiting for them to fail over", server=server)
        self.servers = checks

    async def _check_servers_forever(self) -> None:
        while True:
            await asyncio.sleep(SERVER_CHECK_INTERVAL)
            try:
                await self.check_servers()
            except Exception as exc:  # never let the checks end: absent() would fall back to the plain TTL
                log.warning("server check failed", error=repr(exc))

    def _deaf(self, now: float) -> bool:
        """Silent for ``LIVENESS_TTL`` although replicas were live when it last heard anything."""
        heard = self.heard_at
        if now - heard <= LIVENESS_TTL:
            return False
        return any(heard - seen.at <= LIVENESS_TTL for by_key in self.replicas.values() for seen in by_key.values())

    def _reconnects(self) -> int:
        return kvwatch.reconnects(getattr(self.js, "_nc", None))  # nats-py keeps its client there, no public accessor

    async def _watch_forever(self) -> None:
        while True:
            self.watching_since = None
            try:
                reconnects = self._reconnects()
                kv = await self.js.key_value(REGISTRY_BUCKET)
                watcher = await kv.watchall()
                try:
                    heard = time.monotonic()
                    while self._reconnects() == reconnects:
                        # Silence for WATCH_SILENCE (TimeoutError) or StopAsyncIteration rebuilds the watch.
                        try:
                            entry = await asyncio.wait_for(anext(watcher), RECONNECT_CHECK)
                        except TimeoutError:
                            if time.monotonic() - heard > WATCH_SILENCE:
                                raise
                            continue
                        heard = self.heard_at = time.monotonic()
                        if entry is None:  # end of the initial values
                            self.watching_since = heard
                            self.ready.set()
                            continue
                        self._apply(entry)
                    log.info("nats reconnected: rebuilding the registry watch")
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                log.info("registry watch silent; rebuilding it", silent_for=WATCH_SILENCE)
            except Exception as exc:
                log.warning("registry watch interrupted; retrying", error=repr(exc))
                await asyncio.sleep(RETRY_DELAY)

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            for seen in self.replicas.values():
                seen.pop(entry.key, None)
            return
        try:
            info = ReplicaInfo.model_validate_json(entry.value)
        except ValidationError:
            log.warning("unreadable registry entry ignored", key=entry.key)
            return
        if entry.key.split(".", 1)[0] != info.instance:
            # Broker permissions let a replica write only under its own instance's keys: an entry that names
            # another instance is forged (or a bug), never a replica of that instance.
            log.warning("registry entry for another instance ignored", key=entry.key, instance=info.instance)
            return
        now = time.monotonic()
        seen = self.replicas.setdefault(info.instance, {})
        known = seen.get(entry.key)
        seen[entry.key] = Seen(info, now, known.first if known is not None else now)
        for key in [key for key, item in seen.items() if now - item.at > FORGET_AFTER]:
            del seen[key]  # a replica killed long ago: its key expired from the bucket without a delete


class Heartbeat:
    """Publishes one replica's ``ReplicaInfo`` every ``HEARTBEAT_INTERVAL`` and deletes it on stop."""

    def __init__(self, js: JetStreamContext, snapshot: Callable[[], Awaitable[ReplicaInfo]]) -> None:
        self.js = js
        self.snapshot = snapshot
        self._task: asyncio.Task[None] | None = None
        self._key = ""
        self._kv: KeyValue | None = None
        """Looked up once: a lookup per beat is one more request a cluster's leader change can swallow."""

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def _beat(self) -> None:
        info = await self.snapshot()
        self._key = registry_key(info.instance, info.replica)
        if self._kv is None:
            # Its own context: a put the broker does not answer (a leaving cluster node) gives up after BEAT_TIMEOUT,
            # when the next beat is due. Not asyncio.timeout around the beat: a stop's cancel landing as that limit
            # expires would come out as TimeoutError and the loop would go on.
            beats = self.js._nc.jetstream(timeout=BEAT_TIMEOUT)
            self._kv = await beats.key_value(REGISTRY_BUCKET)
        await self._kv.put(self._key, info.model_dump_json().encode())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self._beat()
            except Exception as exc:
                log.warning("heartbeat failed", error=repr(exc))

    async def stop(self) -> None:
        await cancel(self._task)  # not a bare cancel(): one can get lost in nats-py's wait_for (3.11)
        if self._key:
            try:
                kv = await self.js.key_value(REGISTRY_BUCKET)
                await kv.delete(self._key)
            except Exception as exc:
                log.warning("could not remove registry entry", key=self._key, error=repr(exc))
