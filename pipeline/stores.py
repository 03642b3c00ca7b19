"""Fleet-wide key-value state for plugins: ``await self.kv(bucket)`` inside a plugin.

A plugin that must share state with its other replicas and every gateway (a rate limiter's budget, a response
cache) asks its runtime for a store on one of the plugin buckets (``contracts.names.PLUGIN_BUCKETS``)::

    async def startup(self) -> None:
        self.store = await self.kv(CACHE_BUCKET)

Whatever runs the plugin binds a ``PluginRuntime`` to it before ``startup`` (``Plugin.bind``): the stage host
binds ``NatsRuntime`` (the replica's own NATS connection, JetStream KV), the SDK harness and ``backworks profile``
bind ``MemoryRuntime`` unless given another. A store is scoped to the plugin *instance*: its keys live under
``<instance>.`` in the bucket, so two instances never see each other's keys and a broker permission can be
narrowed to ``$KV.<bucket>.<instance>.>``. The two runtimes behave alike (revisions, compare-and-set, watch);
the memory one lives in one process and is for tests and profiling only.

Errors: ``StoreConflict`` (a compare-and-set lost: the key changed), ``StoreUnavailable`` (the broker or bucket
cannot be reached in time); a missing key is ``None``, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from backworks.contracts.names import PLUGIN_BUCKETS
from backworks.pipeline.errors import StoreConflict, StoreUnavailable

DEFAULT_STORE_TIMEOUT = 0.5
"""Seconds a store operation may take before it raises ``StoreUnavailable``."""
MEMORY_MAX_VALUE_BYTES = 1024 * 1024
"""What ``MemoryRuntime`` accepts per value: nats-server's default ``max_payload``."""
OPEN_TIMEOUT = 10.0
"""Seconds ``NatsRuntime.kv`` waits for a bucket to be declared."""
OPEN_RETRY_S = 0.2
PAYLOAD_HEADROOM = 1024
"""Bytes of a NATS message taken by its subject and headers, kept free below the server's ``max_payload``."""
KEY_TOKEN = re.compile(r"^[-_=a-zA-Z0-9]+(\.[-_=a-zA-Z0-9]+)*$")
DIGEST_CHARS = 40


def digest(*parts: str) -> str:
    """A valid, fixed-length key token for arbitrary text (client IPs, consumer names, header values, URLs)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\0")  # ("ab", "c") and ("a", "bc") must differ
    return hasher.hexdigest()[:DIGEST_CHARS]


def check_key(key: str) -> str:
    """``key`` when it is a valid store key (dot-separated tokens of ``[-_=a-zA-Z0-9]``), else ``ValueError``."""
    if not KEY_TOKEN.match(key):
        raise ValueError(
            f"invalid store key {key!r}: use dot-separated tokens of letters, digits, '-', '_' or '=' "
            "(hash free text with backworks.pipeline.stores.digest)"
        )
    return key


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's current value and its revision (what ``update(..., last=revision)`` compares against)."""

    key: str
    """The key within the store (without the instance prefix)."""
    value: bytes
    revision: int
    deleted: bool = False
    """Seen by a watch: the key was deleted or purged."""


class Watch(ABC):
    """Changes to every key of a store, current values first; iterate it, ``stop()`` it when done."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Entry]: ...

    @abstractmethod
    async def stop(self) -> None: ...


class KeyValueStore(ABC):
    """One plugin instance's keys in one bucket. Every method raises ``StoreUnavailable`` when it cannot answer."""

    bucket: str
    namespace: str
    max_value_bytes: int
    """Values larger than this cannot be stored (the broker's ``max_payload`` minus headroom)."""

    @abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The current value of ``key``, or ``None`` when it has none."""

    @abstractmethod
    async def put(self, key: str, value: bytes) -> int:
        """Set ``key`` unconditionally; returns the new revision."""

    @abstractmethod
    async def update(self, key: str, value: bytes, last: int) -> int:
        """Compare-and-set: set ``key`` only if its revision is still ``last`` (0: only if it has no value).

        Returns the new revision; raises ``StoreConflict`` when someone wrote the key in between.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``'s value."""

    @abstractmethod
    async def watch(self) -> Watch:
        """Every key's current value, then each change as it happens (~0.4 ms after the write on NATS)."""


class PluginRuntime(Protocol):
    """What a host gives a plugin (``Plugin.bind``): today, its key-value stores."""

    async def kv(self, bucket: str, namespace: str) -> KeyValueStore:
        """The store of instance ``namespace`` on ``bucket``."""
        ...


def check_bucket(bucket: str) -> str:
    if bucket not in PLUGIN_BUCKETS:
        raise ValueError(f"plugins may use the buckets {list(PLUGIN_BUCKETS)}, not {bucket!r}")
    return bucket


# ---------------------------------------------------------------------------------------------------------- NATS


class NatsWatch(Watch):
    def __init__(self, watcher: Any, prefix: str) -> None:
        self.watcher = watcher
        self.prefix = prefix

    async def __aiter__(self) -> AsyncIterator[Entry]:
        async for item in self.watcher:
            if item is None:
                continue  # nats-py's "caught up with the current values" marker
            deleted = item.operation in ("DEL", "PURGE")
            yield Entry(item.key[len(self.prefix) :], item.value or b"", item.revision, deleted)

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error):  # the connection is gone: nothing left to unsubscribe
            await self.watcher.stop()


UNAVAILABLE = (nats.errors.Error, TimeoutError)
"""Every nats-py error (timeouts, no responders, no stream response, API errors) and our own time limit."""


class NatsStore(KeyValueStore):
    """A store on a JetStream KV bucket."""

    def __init__(self, kv: KeyValue, bucket: str, namespace: str, max_value_bytes: int, timeout: float) -> None:
        self.kv = kv
        self.bucket = bucket
        self.namespace = namespace
        self.prefix = f"{namespace}."
        self.max_value_bytes = max_value_bytes
        self.timeout = timeout

    def _where(self, key: str) -> str:
        return f"key {key!r} of bucket {self.bucket} (instance {self.namespace})"

    async def get(self, key: str) -> Entry | None:
        try:
            async with asyncio.timeout(self.timeout):
                found = await self.kv.get(self.prefix + check_key(key), validate_keys=False)
        except nats.js.errors.KeyNotFoundError:
            return None
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot read {self._where(key)}: {exc!r}") from exc
        return Entry(key, found.value or b"", found.revision or 0)

    async def put(self, key: str, value: bytes) -> int:
        try:
            async with asyncio.timeout(self.timeout):
                revision: int = await self.kv.put(self.prefix + check_key(key), value, validate_keys=False)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot write {self._where(key)}: {exc!r}") from exc
        return revision

    async def update(self, key: str, value: bytes, last: int) -> int:
        subject = self.prefix + check_key(key)
        try:
            async with asyncio.timeout(self.timeout):
                if last == 0:
                    # create() also recreates a key whose last message is a delete marker
                    revision: int = await self.kv.create(subject, value, validate_keys=False)
                else:
                    revision = await self.kv.update(subject, value, last=last, validate_keys=False)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise StoreConflict(f"{self._where(key)} changed since revision {last}") from exc
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot write {self._where(key)}: {exc!r}") from exc
        return revision

    async def delete(self, key: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.kv.delete(self.prefix + check_key(key), validate_keys=False)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot delete {self._where(key)}: {exc!r}") from exc

    async def watch(self) -> Watch:
        try:
            async with asyncio.timeout(self.timeout):
                watcher = await self.kv.watch(f"{self.prefix}>")
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot watch bucket {self.bucket} (instance {self.namespace}): {exc!r}") from exc
        return NatsWatch(watcher, self.prefix)


class NatsRuntime:
    """Stores on the broker's KV buckets, through one client (the stage host's)."""

    def __init__(self, client: Client, js: JetStreamContext, timeout: float = DEFAULT_STORE_TIMEOUT) -> None:
        self.client = client
        self.js = js
        self.timeout = timeout

    async def kv(self, bucket: str, namespace: str) -> KeyValueStore:
        check_bucket(bucket)
        check_key(namespace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPEN_TIMEOUT
        while True:  # the declaring service creates buckets just after the streams a stage host waits for
            try:
                async with asyncio.timeout(self.timeout * 4):
                    kv = await self.js.key_value(bucket)
                break
            except (nats.js.errors.BucketNotFoundError, *UNAVAILABLE) as exc:
                if loop.time() > deadline:
                    raise StoreUnavailable(
                        f"KV bucket {bucket} cannot be opened ({exc!r}): it is declared by `backworks up`, "
                        "`backworks nats` or `backworks declare`"
                    ) from exc
                await asyncio.sleep(OPEN_RETRY_S)
        max_value = self.client.max_payload - PAYLOAD_HEADROOM
        return NatsStore(kv, bucket, namespace, max_value, self.timeout)


# -------------------------------------------------------------------------------------------------------- memory


class MemoryWatch(Watch):
    def __init__(self, owner: MemoryBucket, prefix: str) -> None:
        self.owner = owner
        self.prefix = prefix
        self.queue: asyncio.Queue[Entry | None] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[Entry]:
        while (entry := await self.queue.get()) is not None:
            yield entry

    async def stop(self) -> None:
        self.owner.watches.discard(self)
        self.queue.put_nowait(None)


class MemoryBucket:
    """One bucket's keys and revisions, shared by every ``MemoryStore`` of one ``MemoryRuntime``."""

    def __init__(self) -> None:
        self.values: dict[str, Entry] = {}
        self.sequence = 0
        self.watches: set[MemoryWatch] = set()

    def write(self, full_key: str, value: bytes, deleted: bool = False) -> int:
        self.sequence += 1
        self.values[full_key] = Entry(full_key, value, self.sequence, deleted)
        for watch in self.watches:
            if full_key.startswith(watch.prefix):
                watch.queue.put_nowait(Entry(full_key[len(watch.prefix) :], value, self.sequence, deleted))
        return self.sequence


class MemoryStore(KeyValueStore):
    """A store in this process's memory, with the revision and compare-and-set semantics of JetStream KV."""

    def __init__(self, bucket: str, namespace: str, data: MemoryBucket, max_value_bytes: int) -> None:
        self.bucket = bucket
        self.namespace = namespace
        self.prefix = f"{namespace}."
        self.data = data
        self.max_value_bytes = max_value_bytes

    def _current(self, key: str) -> Entry | None:
        found = self.data.values.get(self.prefix + check_key(key))
        return None if found is None or found.deleted else Entry(key, found.value, found.revision)

    async def get(self, key: str) -> Entry | None:
        return self._current(key)

    async def put(self, key: str, value: bytes) -> int:
        self._check_size(key, value)
        return self.data.write(self.prefix + check_key(key), value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        self._check_size(key, value)
        current = self._current(key)
        if (current.revision if current else 0) != last:
            raise StoreConflict(f"key {key!r} of bucket {self.bucket} changed since revision {last}")
        return self.data.write(self.prefix + key, value)

    async def delete(self, key: str) -> None:
        self.data.write(self.prefix + check_key(key), b"", deleted=True)

    async def watch(self) -> Watch:
        watch = MemoryWatch(self.data, self.prefix)
        for full_key, entry in list(self.data.values.items()):
            if full_key.startswith(self.prefix) and not entry.deleted:
                watch.queue.put_nowait(Entry(full_key[len(self.prefix) :], entry.value, entry.revision))
        self.data.watches.add(watch)
        return watch

    def _check_size(self, key: str, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            # What nats-server answers to a message above max_payload.
            raise StoreUnavailable(f"value of {len(value)} bytes for key {key!r} exceeds {self.max_value_bytes}")


class MemoryRuntime:
    """Stores in this process's memory (tests, ``backworks profile``): plugins bound to one runtime share them.

    Not fleet-wide: two processes never share a ``MemoryRuntime``. The stage host always binds ``NatsRuntime``.
    """

    def __init__(self, max_value_bytes: int = MEMORY_MAX_VALUE_BYTES) -> None:
        self.buckets: dict[str, MemoryBucket] = {}
        self.max_value_bytes = max_value_bytes

    async def kv(self, bucket: str, namespace: str) -> KeyValueStore:
        data = self.buckets.setdefault(check_bucket(bucket), MemoryBucket())
        return MemoryStore(bucket, check_key(namespace), data, self.max_value_bytes)
