"""``cache``: responses stored in NATS KV (``bw_cache``), shared by every replica and gateway.

The request phase looks the request up (one KV read) and answers a fresh hit itself: the rest of the request
phase, the handler included, is skipped. The response phase marks misses and stores what may be stored (one KV
write). Freshness travels with the entry (``expires_at``): a stale entry is a miss, and is overwritten by the
next store; the bucket's max age (a day) removes what nobody overwrites.
"""

from __future__ import annotations

import time
from collections import Counter

import structlog

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import CACHE_BUCKET
from backworks.pipeline.errors import StoreUnavailable
from backworks.pipeline.plugin import Action, Continue, RequestProcessor, Respond
from backworks.pipeline.stores import KeyValueStore
from backworks.plugins.cache.config import CacheConfig
from backworks.plugins.cache.entries import Cached, bypasses, cache_key, freshness

log = structlog.get_logger("backworks.plugins.cache")

ANNOTATION = "cache"
"""``envelope.annotations[ANNOTATION][instance]``: ``{"hit": true}`` or ``{"key": ...}`` (``None``: do not store)."""
CACHE_STATUS_HEADER = "x-cache"


class Cache(RequestProcessor[CacheConfig]):
    """Caches responses in the ``bw_cache`` KV bucket, so every gateway and replica shares one cache.

    Keyed by method, path, query, the ``vary`` request headers and (``per_consumer``) the authenticated consumer.
    Honours the request's ``Cache-Control: no-cache`` (skip the lookup, store the fresh answer) and ``no-store``
    (neither), and the response's ``no-store``, ``private``, ``no-cache``, ``max-age`` and ``s-maxage``. Only 2xx
    responses without ``Set-Cookie`` are stored unless configured. Responses carry ``x-cache: hit | miss`` and,
    on a hit, ``Age``. A response too large for the broker's max payload is not stored (``too_large`` metric).
    """

    name = "cache"
    version = "1.0.0"
    description = "Shared response cache in NATS KV: a hit skips the handler; honours Cache-Control; x-cache and Age."
    capabilities = ("cache",)
    max_execution_time = 0.5  # one KV read or write, of up to the broker's max payload
    Config = CacheConfig

    store: KeyValueStore

    async def startup(self) -> None:
        self.store = await self.kv(CACHE_BUCKET)
        self.counts: Counter[str] = Counter()

    async def process_request(self, envelope: Envelope) -> Action:
        if envelope.method not in self.config.methods:
            return Continue(envelope)
        no_cache, no_store = bypasses(envelope)
        key = cache_key(envelope, self.config)
        if not no_cache:
            cached = await self._lookup(key)
            now = time.time()
            if cached is not None and cached.expires_at > now:
                self.counts["hits"] += 1
                response = cached.response
                response.set_header("age", str(max(0, int(now - cached.stored_at))))
                response.set_header(CACHE_STATUS_HEADER, "hit")
                envelope.annotations.setdefault(ANNOTATION, {})[self.instance] = {"hit": True}
                return Respond(response)
            if cached is not None:
                self.counts["stale"] += 1
        self.counts["misses"] += 1
        envelope.annotations.setdefault(ANNOTATION, {})[self.instance] = {"key": None if no_store else key}
        return Continue(envelope)

    async def process_response(self, envelope: Envelope) -> Action:
        note = envelope.annotations.get(ANNOTATION, {}).get(self.instance)
        response = envelope.response
        if note is None or response is None or note.get("hit"):
            return Continue(envelope)
        response.set_header(CACHE_STATUS_HEADER, "miss")
        key = note.get("key")
        if key is None:
            return Continue(envelope)
        ttl, reason = freshness(response, self.config)
        if not ttl:
            self.counts[f"not_stored_{reason.replace('-', '_')}"] += 1
            return Continue(envelope)
        now = time.time()
        value = Cached(response, now, now + ttl).encode()
        if len(value) > self.store.max_value_bytes:
            self.counts["too_large"] += 1
            return Continue(envelope)
        try:
            await self.store.put(key, value)
            self.counts["stored"] += 1
        except StoreUnavailable as exc:
            self._failed(exc)
        return Continue(envelope)

    async def _lookup(self, key: str) -> Cached | None:
        try:
            entry = await self.store.get(key)
        except StoreUnavailable as exc:
            self._failed(exc)  # an unreachable cache is a miss: the handler answers
            return None
        return Cached.decode(entry.value) if entry is not None else None

    def _failed(self, exc: StoreUnavailable) -> None:
        self.counts["kv_errors"] += 1
        if self.counts["kv_errors"] % 100 == 1:
            log.warning("cache store unreachable; serving misses", instance=self.instance, error=str(exc))

    async def get_metrics(self) -> dict[str, float]:
        return {name: float(n) for name, n in getattr(self, "counts", Counter()).items()}
