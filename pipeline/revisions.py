"""Blueprint revisions in the ``bw_config`` KV bucket: reading, storing (admin only), loading, following.

Key ``rev.<n>`` holds revision ``n`` (``contracts.revision.Revision``: the blueprint as written, when, why, the diff
summary, the revision before); key ``current`` names the running one. Storing is two writes: ``create`` of the new
``rev.<n>`` (refused when another apply took ``n``) and a compare-and-set of ``current`` on the revision read, so two
concurrent applies never both win. Services follow ``current`` with a KV watch (``RevisionFollower``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from backworks.contracts.blueprint import NatsSettings
from backworks.contracts.names import CONFIG_BUCKET, CONFIG_CURRENT_KEY, revision_key
from backworks.contracts.revision import CurrentPointer, Revision
from backworks.pipeline import blueprints, broker, kvwatch
from backworks.pipeline.blueprint_diff import diff
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.errors import RevisionConflict, RevisionError

log = structlog.get_logger("backworks.revisions")

REVISION_PREFIX = "rev."
WATCH_RETRY_DELAY = 0.5
"""Seconds before a broken watch of ``current`` is opened again."""
MAX_WATCH_RETRY_DELAY = 5.0
WATCH_POLL = 1.0
"""Seconds one wait for a change of ``current`` lasts before the watch looks whether it should stop."""
STOP_TIMEOUT = 2.0


def encode(data: Any) -> bytes:
    # YAML may hold dates and the like: stored as their text, which the blueprint model reads back the same.
    return json.dumps(data, default=str, sort_keys=True).encode()


class RevisionStore:
    """The revisions of one deployment, in ``bw_config``."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self.kv = kv
        self.js = js

    @classmethod
    async def open(cls, js: JetStreamContext) -> RevisionStore:
        try:
            return cls(await js.key_value(CONFIG_BUCKET), js)
        except (BucketNotFoundError, NotFoundError):
            raise RevisionError(
                f"the {CONFIG_BUCKET} bucket does not exist on this broker: run `backworks declare BLUEPRINT` "
                "(or `backworks up`) first"
            ) from None

    async def current_number(self) -> tuple[int | None, int]:
        """The running revision's number (None: none stored yet) and the KV sequence of ``current``."""
        try:
            entry = await self.kv.get(CONFIG_CURRENT_KEY)
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return CurrentPointer.model_validate_json(entry.value).revision, entry.revision or 0

    async def get(self, number: int) -> Revision:
        """Revision ``number``; ``RevisionError`` when the bucket no longer (or never) held it."""
        try:
            entry = await self.kv.get(revision_key(number))
        except KeyNotFoundError:
            raise RevisionError(f"revision {number} is not in {CONFIG_BUCKET} (never stored, or deleted)") from None
        try:
            return Revision.model_validate_json(entry.value or b"")
        except ValidationError as exc:
            raise RevisionError(f"revision {number} in {CONFIG_BUCKET} is unreadable: {exc}") from None

    async def current(self) -> Revision | None:
        number, _ = await self.current_number()
        return None if number is None else await self.get(number)

    async def history(self) -> list[Revision]:
        """Every stored revision, oldest first."""
        keys = await kvwatch.keys(self.js, CONFIG_BUCKET)
        numbers = sorted(int(key[len(REVISION_PREFIX) :]) for key in keys if key.startswith(REVISION_PREFIX))
        return [await self.get(number) for number in numbers]

    async def store(self, loaded: LoadedBlueprint, message: str = "") -> tuple[Revision, Revision | None]:
        """Store ``loaded`` as the next revision and make it current; returns it and the revision it replaced.

        ``RevisionConflict`` when another apply stored one meanwhile.
        """
        number, sequence = await self.current_number()
        previous = await self.get(number) if number is not None else None
        summary = "first revision"
        if previous is not None:
            summary = diff(load(previous), loaded).summary()
        revision = Revision(
            number=(number or 0) + 1,  # ``current`` is always the newest: every store makes its revision current
            created_at=time.time(),
            message=message,
            summary=summary,
            previous=number,
            source=str(loaded.path.resolve()),
            blueprint=json.loads(encode(loaded.data)),
        )
        try:
            await self.kv.create(revision_key(revision.number), revision.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            raise RevisionConflict(f"revision {revision.number} was stored by another apply; try again") from None
        pointer = CurrentPointer(revision=revision.number).model_dump_json().encode()
        try:
            if sequence:
                await self.kv.update(CONFIG_CURRENT_KEY, pointer, last=sequence)
            else:
                await self.kv.create(CONFIG_CURRENT_KEY, pointer)
        except KeyWrongLastSequenceError:
            with contextlib.suppress(Exception):
                await self.kv.delete(revision_key(revision.number))
            raise RevisionConflict("another apply changed the current revision meanwhile; try again") from None
        log.info("revision stored", revision=revision.number, summary=summary)
        return revision, previous


def load(revision: Revision) -> LoadedBlueprint:
    """Validate a stored revision with the plugins installed here (``BlueprintError`` when they cannot run it)."""
    return blueprints.validate(revision.blueprint, revision.source)


def same_blueprint(loaded: LoadedBlueprint, revision: Revision) -> bool:
    """Whether ``loaded`` is what ``revision`` stores (as written, and from the same folder)."""
    return json.loads(encode(loaded.data)) == revision.blueprint and str(loaded.path.resolve()) == str(
        Path(revision.source)
    )


async def adopt_or_store(js: JetStreamContext, loaded: LoadedBlueprint, message: str) -> tuple[Revision, bool]:
    """What ``up`` and ``declare`` do with the blueprint they start with: store it as revision 1 when the bucket has
    none, as the next revision when the running one differs, and keep the running one when it is the same.
    Returns the current revision and whether it was stored now."""
    store = await RevisionStore.open(js)
    current = await store.current()
    if current is not None and same_blueprint(loaded, current):
        return current, False
    revision, _ = await store.store(loaded, message)
    return revision, True


async def running(
    servers: list[str], identity: str, settings: NatsSettings, fallback: LoadedBlueprint
) -> tuple[LoadedBlueprint, int | None]:
    """What a starting service runs: the current revision in ``bw_config`` when there is one (``fallback``, the file
    it was given, when it is that same revision, or when no revision is stored)."""
    client = await broker.connect(servers, name=f"backworks-{identity}-revision", identity=identity, settings=settings)
    try:
        try:
            store = await RevisionStore.open(broker.jetstream(client))
        except RevisionError:
            return fallback, None
        current = await store.current()
        if current is None:
            return fallback, None
        if same_blueprint(fallback, current):
            return fallback, current.number
        return load(current), current.number
    finally:
        await client.drain()


Listener = Callable[[int], Awaitable[None]]


class RevisionFollower:
    """Watches ``current`` and calls ``on_change(number)`` for every revision made current after the one known.

    Calls are sequential (one revision at a time, in order); a listener that fails is logged and the next change
    still arrives. The watch is reopened when it breaks (a broker restart).
    """

    def __init__(self, js: JetStreamContext, on_change: Listener, known: int | None) -> None:
        self.js = js
        self.on_change = on_change
        self.known = known
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow_forever())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: the watch loop also looks at ``_stopping`` between polls, whatever became of the cancel.
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT)
            self._task = None

    async def _follow_forever(self) -> None:
        delay = WATCH_RETRY_DELAY
        while not self._stopping:
            watcher: Any = None
            try:
                kv = await self.js.key_value(CONFIG_BUCKET)
                watcher = await kv.watch(CONFIG_CURRENT_KEY)
                delay = WATCH_RETRY_DELAY
                while not self._stopping:
                    try:
                        entry = await watcher.updates(timeout=WATCH_POLL)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None or not entry.value:
                        continue  # the end-of-initial-values marker, or a deleted pointer
                    await self._take(CurrentPointer.model_validate_json(entry.value).revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                log.warning("revision watch interrupted; retrying", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_WATCH_RETRY_DELAY)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()

    async def _take(self, number: int) -> None:
        if self.known is not None and number <= self.known:
            return
        try:
            await self.on_change(number)
            self.known = number
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("revision not taken", revision=number)
