"""``backworks up`` follows the blueprint revisions: it starts the replicas of added instances and drains, then
stops, the replicas of removed ones; with ``--watch`` it applies the blueprint file when it changes.

The supervisor's loop is synchronous (``Supervisor.run``); this runs an asyncio loop in a thread that watches
``bw_config``, answers ``backworks apply``'s probe as the ``supervisor`` (so apply knows added instances get replicas
and waits for them), and hands the supervisor what to start and stop through a thread-safe queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client

from backworks.applying import SUPERVISOR, ApplyResult, apply
from backworks.contracts.blueprint import NatsSettings
from backworks.contracts.errors import BlueprintError
from backworks.contracts.revision import ProbeAnswer
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprint_diff import diff
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.fleetprobe import ProbeResponder, ask
from backworks.pipeline.revisions import RevisionFollower, RevisionStore, load

log = structlog.get_logger("backworks.up")

DRAIN_MARGIN = 1.0
"""Seconds added to the longest endpoint timeout before a removed instance's replicas are stopped: every request
routed to them under the old revision has had its answer (or its 504) by then."""
GATEWAY_SWITCH_TIMEOUT = 60.0
"""Seconds to wait for the gateway to report a revision before draining anyway."""
WATCH_POLL = 0.5
"""Seconds between two looks at the blueprint file (``up --watch``)."""


@dataclass(frozen=True)
class Start:
    """Start ``replicas`` replicas of ``instance``."""

    instance: str
    replicas: int


@dataclass(frozen=True)
class Stop:
    """Stop ``count`` replicas of ``instance`` (None: every one; it was removed and has drained)."""

    instance: str
    count: int | None = None


Action = Start | Stop


class FleetFollower:
    """The thread that follows revisions for ``up``; ``actions`` holds what the supervisor must do."""

    def __init__(self, servers: list[str], settings: NatsSettings, revision: int | None) -> None:
        self.servers = servers
        self.settings = settings
        self.revision = revision
        self.actions: queue.Queue[Action] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="backworks-revisions", daemon=True)
        self.client: Client | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10.0)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10.0)

    def apply(self, loaded: LoadedBlueprint, message: str) -> ApplyResult:
        """Apply ``loaded`` from the supervisor's thread (``--watch``), on this thread's loop."""
        future = asyncio.run_coroutine_threadsafe(apply(self.servers, loaded, message), self.loop)
        return future.result()

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.client = await broker.connect(self.servers, name="backworks-up-revisions", settings=self.settings)
            js = broker.jetstream(self.client)
            store = await RevisionStore.open(js)
            follower = RevisionFollower(js, lambda number: self._take(store, number), self.revision)
            probe = ProbeResponder(self.client, self._answer)
            await follower.start()
            await probe.start()
        finally:
            self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await probe.stop()
            await follower.stop()
            with contextlib.suppress(Exception):
                await self.client.drain()

    async def _answer(self, candidate: dict[str, Any] | None) -> ProbeAnswer:
        return ProbeAnswer(role=SUPERVISOR, name="up", replica="up", revision=self.revision)

    async def _take(self, store: RevisionStore, number: int) -> None:
        new = load(await store.get(number))
        old = load(await store.get(self.revision)) if self.revision is not None else None
        self.revision = number
        if old is None:
            return
        changes = diff(old, new)
        for name in changes.instances_added:
            self.actions.put(Start(name, new.instances[name].spec.replicas))
        for name in changes.instances_changed:  # a changed ``replicas:`` count scales the running instance
            more = new.instances[name].spec.replicas - old.instances[name].spec.replicas
            if more:
                self.actions.put(Start(name, more) if more > 0 else Stop(name, -more))
        if changes.instances_removed:
            drain = max(old.model.timeout_ms(endpoint) for endpoint in old.model.endpoints) / 1000 + DRAIN_MARGIN
            task = asyncio.get_running_loop().create_task(self._drain(number, changes.instances_removed, drain))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, number: int, removed: tuple[str, ...], drain: float) -> None:
        """Stop the removed instances' replicas once no request of an older revision can still need them."""
        deadline = time.monotonic() + GATEWAY_SWITCH_TIMEOUT
        assert self.client is not None
        while time.monotonic() < deadline:
            gateways = [a for a in await ask(self.client) if a.role == "gateway"]
            if all((a.revision or 0) >= number for a in gateways):
                break
        await asyncio.sleep(drain)
        for name in removed:
            log.info("removed instance drained; stopping its replicas", instance=name, revision=number)
            self.actions.put(Stop(name))


class BlueprintWatch:
    """``up --watch``: notices when the blueprint file's content changes and settles (two equal looks in a row)."""

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self.path = path
        self.on_change = on_change
        self.applied = self._digest()
        self.seen = self.applied
        self.next_look = 0.0

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next_look:
            return
        self.next_look = now + WATCH_POLL
        digest = self._digest()
        if digest is None or digest == self.applied:
            self.seen = digest
            return
        if digest != self.seen:  # still being written: look again once it stops changing
            self.seen = digest
            return
        self.applied = digest
        self.on_change()


def watch_and_apply(path: Path, follower: FleetFollower, say: Callable[[str], None]) -> BlueprintWatch:
    """The ``--watch`` loop's change handler: validate, apply, say what happened; an invalid edit changes nothing."""

    def changed() -> None:
        try:
            loaded = blueprints.load(path)
        except BlueprintError as exc:
            say(f"{path} changed but is invalid; the running revision stays:\n{exc}")
            return
        try:
            result = follower.apply(loaded, f"up --watch: {path.name} changed")
        except Exception as exc:
            say(f"{path} changed but could not be applied: {exc}")
            return
        if result.refused:
            say("apply refused: " + "; ".join(result.refused))
        elif result.revision is None:
            say(f"{path} changed: no changes to the running blueprint")
        else:
            say(f"applied {path.name} as revision {result.revision.number}: {result.diff.summary()}")

    return BlueprintWatch(path, changed)
