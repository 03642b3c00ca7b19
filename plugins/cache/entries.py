"""What the cache stores and how it decides: keys, ``Cache-Control`` rules, and the stored entry format."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.stores import digest
from backworks.plugins.cache.config import CacheConfig

ENTRY_VERSION = 1
NOT_STORED_HEADERS = frozenset({"age", "x-cache"})
"""Headers that describe one delivery, not the resource: set again on each hit."""


def directives(value: str | None) -> dict[str, str | None]:
    """Directives of a ``Cache-Control`` value: ``"no-cache, max-age=60"`` -> ``{"no-cache": None, "max-age": "60"}``"""
    found: dict[str, str | None] = {}
    for part in (value or "").split(","):
        name, sep, argument = part.strip().partition("=")
        if name:
            found[name.strip().lower()] = argument.strip().strip('"') if sep else None
    return found


def cache_key(envelope: Envelope, config: CacheConfig) -> str:
    """Method, path, query (sorted by name; repeated names keep their order), the ``vary`` headers and consumer."""
    parts = [envelope.method, envelope.path]
    parts.extend(f"q:{name}={value}" for name, value in sorted(envelope.query, key=lambda pair: pair[0]))
    parts.extend(f"h:{name}={envelope.header(name) or ''}" for name in config.vary)
    if config.per_consumer and envelope.principal is not None:
        parts.append(f"c:{envelope.principal.consumer}")
    return digest(*parts)


def bypasses(envelope: Envelope) -> tuple[bool, bool]:
    """``(skip lookup, skip store)`` asked by the request: ``no-cache`` (or ``Pragma: no-cache``), ``no-store``."""
    asked = directives(envelope.header("cache-control"))
    no_store = "no-store" in asked
    no_cache = no_store or "no-cache" in asked or asked.get("max-age") == "0"
    if "no-cache" in directives(envelope.header("pragma")):
        no_cache = True
    return no_cache, no_store


def _seconds(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return 0  # an unreadable max-age is treated as stale (RFC 9111 §4.2.1)


def freshness(response: HttpResponse, config: CacheConfig) -> tuple[int, str]:
    """Seconds ``response`` may be served from the cache (0: do not store it) and, when 0, why not."""
    if config.statuses and response.status not in config.statuses:
        return 0, "status"
    if not config.statuses and not 200 <= response.status < 300:
        return 0, "status"
    if not config.store_set_cookie and response.header("set-cookie") is not None:
        return 0, "set-cookie"
    said = directives(response.header("cache-control"))
    for refusal in ("no-store", "private", "no-cache"):
        if refusal in said:
            return 0, refusal
    varies = {name.strip().lower() for name in (response.header("vary") or "").split(",") if name.strip()}
    if "*" in varies or not varies <= set(config.vary):
        return 0, "vary"  # the response depends on request headers the key does not hold
    ttl = config.ttl_s
    for name in ("s-maxage", "max-age"):  # a shared cache obeys s-maxage first
        seconds = _seconds(said.get(name)) if name in said else None
        if seconds is not None:
            ttl = min(ttl, seconds)
            break
    return (ttl, "") if ttl > 0 else (0, "max-age")


@dataclass(frozen=True)
class Cached:
    """A stored response and when it was stored and goes stale (unix seconds)."""

    response: HttpResponse
    stored_at: float
    expires_at: float

    def encode(self) -> bytes:
        return json.dumps({
            "v": ENTRY_VERSION,
            "stored_at": self.stored_at,
            "expires_at": self.expires_at,
            "status": self.response.status,
            "headers": [(k, v) for k, v in self.response.headers if k not in NOT_STORED_HEADERS],
            "body": base64.b64encode(self.response.body).decode(),
        }).encode()  # fmt: skip

    @classmethod
    def decode(cls, value: bytes) -> Cached | None:
        """The entry in ``value``, or ``None`` when it is not one this version wrote."""
        try:
            data = json.loads(value)
            if data.get("v") != ENTRY_VERSION:
                return None
            response = HttpResponse(
                status=data["status"],
                headers=[(str(k), str(v)) for k, v in data["headers"]],
                body=base64.b64decode(data["body"]),
            )
            return cls(response, float(data["stored_at"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
