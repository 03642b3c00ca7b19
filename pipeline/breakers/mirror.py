"""Keeps the local breaker views in step with the ``bw_breakers`` bucket, both ways.

In: a KV watch on the whole bucket, rebuilt from a full snapshot after every reconnect of the NATS client
(nats-py's ordered consumer alone resumed only ~20 s after a nats-server restart, and a memory bucket may come
back empty). Out: this process's own window records, written in the background at most every
``WRITE_INTERVAL`` per instance (one put in flight, always the latest tallies), retried until they land. State
transitions and probe claims are CAS writes made by :class:`~backworks.pipeline.breakers.fleet.FleetBreakers`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from backworks.contracts.breakers import (
    PROBE,
    STATE,
    WINDOW,
    ProbeRecord,
    StateRecord,
    WindowRecord,
    parse_key,
    window_key,
)
from backworks.contracts.names import BREAKERS_BUCKET
from backworks.pipeline.breakers.view import Clock, FleetView
from backworks.pipeline.errors import BrokerUnavailable
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.breakers")

START_TIMEOUT = 5.0
"""Seconds ``start`` waits for the bucket's current contents."""
RECONNECT_CHECK_INTERVAL = 0.1
"""How often the watch checks whether the NATS client reconnected (and must be rebuilt from a snapshot)."""
WRITE_INTERVAL = 0.05
"""Seconds between two writes of one process's window records while they hold failed or slow calls: a busy
process with failures writes ~20 times a second."""
CALM_WRITE_INTERVAL = 0.5
"""Seconds between two writes while every call in this process's windows succeeded fast. Such records can only
lower the fleet's rates (or bring them to ``minimum_calls``), so they are shared less often: every process parses
every write of every other one, and at 20 writes a second per busy stage that was ~25 µs of CPU per request in
each process of the benchmark's pipeline (an idle stage: ~45 -> ~20 µs per request). A failed or slow call, and
``flush``, still write after at most ``WRITE_INTERVAL``."""
RETRY_DELAY = 0.1
MAX_RETRY_DELAY = 2.0
STOP_TIMEOUT = 1.0
"""Seconds ``stop`` gives pending writes (and each key removal) before giving up on them."""


class BucketMirror:
    """The watch that feeds ``views`` and the writer that publishes this process's windows."""

    def __init__(
        self,
        js: JetStreamContext,
        views: dict[str, FleetView],
        me: str,
        clock: Clock,
        on_state: Callable[[str], None],
        on_window: Callable[[str], None],
        on_probe: Callable[[str], None],
    ) -> None:
        self.kv: KeyValue | None = None
        self._js = js
        self._views = views
        self._me = me
        self._clock = clock
        self._on_state = on_state
        self._on_window = on_window
        self._on_probe = on_probe
        self._ready = asyncio.Event()
        self._dirty: set[str] = set()
        self._written: set[str] = set()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        """A failed or slow call (or a flush) waits: write after ``WRITE_INTERVAL``, not ``CALM_WRITE_INTERVAL``."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        if self._loops:
            return
        self._loops = [
            asyncio.create_task(self._watch_forever(), name=f"breakers-watch-{self._me}"),
            asyncio.create_task(self._write_forever(), name=f"breakers-write-{self._me}"),
        ]
        try:
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise BrokerUnavailable(
                f"could not load circuit-breaker state from KV bucket {BREAKERS_BUCKET} within {START_TIMEOUT:.0f} s:"
                " is NATS reachable and the bucket declared (`backworks up` or `backworks declare`)?"
            ) from None

    async def stop(self) -> None:
        """Write what is pending (briefly), stop, and remove this process's window keys."""
        if not self._loops:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), STOP_TIMEOUT)
        self._stopping = True
        await cancel(self._loops)
        self._loops = []
        if self.kv is not None:
            for instance in sorted(self._written):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.kv.delete(window_key(instance, self._me)), STOP_TIMEOUT)
        self._written.clear()

    async def flush(self) -> None:
        """Wait until this process's windows are written."""
        if not self._idle.is_set():
            self._urgent.set()
        await self._idle.wait()

    def mark_dirty(self, instance: str, *, urgent: bool = True) -> None:
        """This process's window of ``instance`` changed: write it (``urgent``: a failed or slow call, write soon)."""
        self._dirty.add(instance)
        self._idle.clear()
        self._wake.set()
        if urgent:
            self._urgent.set()

    # --- in ------------------------------------------------------------------------------------------------------

    async def _watch_forever(self) -> None:
        delay = RETRY_DELAY
        while not self._stopping:
            watcher: KeyValue.KeyWatcher | None = None
            try:
                reconnects = self._reconnects()
                self.kv = await self._js.key_value(BREAKERS_BUCKET)
                watcher = await self.kv.watchall()
                await self._load(watcher)
                delay = RETRY_DELAY
                while self._reconnects() == reconnects and not self._stopping:
                    try:
                        entry = await _next_entry(watcher, RECONNECT_CHECK_INTERVAL)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is not None:
                        self._apply(entry, self._views)
                if not self._stopping:
                    log.info("nats reconnected: reloading breaker state", writer=self._me)
            except Exception as exc:
                log.warning("breaker watch interrupted; retrying", error=repr(exc), writer=self._me)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: unannotated

    async def _load(self, watcher: KeyValue.KeyWatcher) -> None:
        """Adopt the bucket's current contents (the watch's initial values, up to its ``None`` marker)."""
        fresh = {name: FleetView(name, view.settings, self._me) for name, view in self._views.items()}
        while (entry := await _next_entry(watcher, START_TIMEOUT)) is not None:
            self._apply(entry, fresh)
        for name, view in self._views.items():
            view.replace(fresh[name].state, fresh[name].windows, fresh[name].probes)
            if view.own.tallies(self._clock()):
                self.mark_dirty(name)  # the broker may have lost our record (a memory bucket on a restart)
            self._on_state(name)
            self._on_window(name)
            self._on_probe(name)
        self._ready.set()

    def _apply(self, entry: KeyValue.Entry, views: dict[str, FleetView]) -> None:
        parsed = parse_key(entry.key)
        if parsed is None or parsed[0] not in views:
            return
        instance, kind, rest = parsed
        view, revision, value = views[instance], entry.revision or 0, entry.value or b""
        deleted = entry.operation in (KV_DEL, KV_PURGE) or not value
        live = views is self._views
        try:
            if kind == STATE:
                state = None if deleted else StateRecord.model_validate_json(value)
                if view.apply_state(state, revision) and live:
                    self._on_state(instance)
            elif kind == WINDOW and rest != self._me:
                window = None if deleted else WindowRecord.model_validate_json(value)
                if view.apply_window(rest, window, revision) and live:
                    self._on_window(instance)
            elif kind == PROBE and rest.isdigit():
                probe = None if deleted else ProbeRecord.model_validate_json(value)
                if view.apply_probe(int(rest), probe, revision) and live:
                    self._on_probe(instance)
        except ValidationError as exc:
            log.warning("unreadable breaker record ignored", key=entry.key, error=str(exc))

    def _reconnects(self) -> int:
        client = getattr(self._js, "_nc", None)  # nats-py keeps its client there, with no public accessor
        stats = getattr(client, "stats", None)
        return int(stats.get("reconnects", 0)) if isinstance(stats, dict) else 0

    # --- out -----------------------------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        delay = RETRY_DELAY
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()  # what is marked during these puts waits for the next round
            calm = True
            for instance in sorted(batch):
                record = self._views[instance].own_record(self._clock())
                calm = calm and not any(failed or slow for _, _, failed, slow in record.tallies)
                try:
                    if self.kv is None:
                        raise BrokerUnavailable(f"KV bucket {BREAKERS_BUCKET} not loaded yet")
                    await self.kv.put(window_key(instance, self._me), record.model_dump_json().encode())
                    self._written.add(instance)
                    delay = RETRY_DELAY
                except Exception as exc:
                    self._dirty.add(instance)
                    log.warning("cannot write breaker window; retrying", instance=instance, error=repr(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY)
            if self._dirty:
                self._wake.set()
            else:
                self._idle.set()
            await asyncio.sleep(WRITE_INTERVAL)  # outcomes of the next WRITE_INTERVAL go out in one put
            if calm and not self._urgent.is_set():  # only fast successes so far: share them less often
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), CALM_WRITE_INTERVAL - WRITE_INTERVAL)
            self._urgent.clear()


async def _next_entry(watcher: KeyValue.KeyWatcher, timeout: float) -> KeyValue.Entry | None:
    """The watch's next entry (None marks the end of the initial values); ``nats.errors.TimeoutError`` if quiet."""
    # nats-py leaves KeyWatcher's methods unannotated
    entry: KeyValue.Entry | None = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
    return entry
