"""Where the ``jwt`` plugin gets its verification keys: a static key, or a cached JSON Web Key Set.

The key set is fetched at startup, used for ``jwks_cache_s``, and fetched again early when a token names a
``kid`` it does not hold (the issuer rotated its keys). Fetches are single-flight (concurrent requests wait
for one) and at least ``jwks_min_refresh_s`` apart, so a flood of tokens with made-up ``kid``s costs the
JWKS endpoint at most one request per interval. When a fetch fails the last good set is kept.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("backworks.plugins.jwt")


class KeyNotFound(Exception):
    """The token names a key the issuer does not (or no longer) publish: the token is refused (401)."""


class JwksUnavailable(Exception):
    """The key set could not be fetched and none is held: the stage fails (not the caller's fault)."""


class JwksCache:
    """A JSON Web Key Set fetched from ``url`` with httpx, cached and refreshed as the module docstring says."""

    def __init__(self, url: str, *, cache_s: float, min_refresh_s: float, timeout_s: float) -> None:
        self.url = url
        self.cache_s = cache_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self.fetches = 0
        """Fetch attempts so far (reported by ``get_metrics``)."""
        self.last_error: str | None = None
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at = 0.0
        self._attempted_at = -float("inf")
        self._inflight: asyncio.Future[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the HTTP client and fetch the set once (a failure is logged; requests will try again)."""
        import httpx

        self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        try:
            await self._refresh(force=True)
        except JwksUnavailable as exc:
            log.warning("JWKS not fetched at startup; will retry on the first token", url=self.url, error=str(exc))

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def held(self) -> int:
        """How many usable keys the cache holds."""
        return len(self._keys)

    async def key(self, kid: str | None) -> PyJWK:
        """The key named ``kid`` (or the only key, for a token without ``kid``); fetches the set when needed."""
        if time.monotonic() - self._fetched_at > self.cache_s:
            await self._refresh_keeping_old()
        found = self._find(kid)
        if found is None:
            await self._refresh_keeping_old()
            found = self._find(kid)
        if found is None:
            if not self._keys:
                raise JwksUnavailable(f"no key set from {self.url}: {self.last_error or 'not fetched yet'}")
            if kid is None:
                raise KeyNotFound(f"token has no `kid` header and the key set has {len(self._keys)} keys")
            raise KeyNotFound(f"token signed with an unknown key (kid {kid!r})")
        return found

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh_keeping_old(self) -> None:
        try:
            await self._refresh()
        except JwksUnavailable as exc:
            log.warning("JWKS fetch failed; keeping the keys held", url=self.url, error=str(exc), held=self.held)

    async def _refresh(self, *, force: bool = False) -> None:
        """Fetch the set unless one was attempted less than ``min_refresh_s`` ago; callers share a fetch in flight."""
        if self._inflight is None:
            if not force and time.monotonic() - self._attempted_at < self.min_refresh_s:
                return
            self._attempted_at = time.monotonic()
            self.fetches += 1
            self._inflight = asyncio.ensure_future(self._fetch_and_keep())
        # shielded: a caller that times out does not cancel the fetch the others wait for
        await asyncio.shield(self._inflight)

    async def _fetch_and_keep(self) -> None:
        try:
            self._keys = await self._fetch()
            self._fetched_at = time.monotonic()
            self.last_error = None
        finally:
            self._inflight = None

    async def _fetch(self) -> dict[str | None, PyJWK]:
        import httpx  # imported here: `backworks validate` and `--help` load this plugin without the web stack

        if self._client is None:
            raise JwksUnavailable("the JWKS client is not started")
        try:
            response = await self._client.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            keys = PyJWKSet.from_dict(response.json())
        except httpx.HTTPError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise JwksUnavailable(self.last_error) from None
        except (PyJWKError, PyJWKSetError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.last_error = f"invalid key set: {exc}"
            raise JwksUnavailable(self.last_error) from None
        return {key.key_id: key for key in keys}
