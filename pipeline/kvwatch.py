"""Reading a KV bucket whole: listing its keys, and following it forever across broker restarts and failures.

``keys`` asks the bucket's stream which subjects hold messages: nats-py's ``KeyValue.keys()`` lists through a watch
whose end-of-values marker can come before values already on their way (its consumer info reports nothing pending
once the server has sent them), so on a loaded machine it says a bucket with keys is empty.

nats-py's watch is an ordered consumer that does not survive a broker restart (it goes silent), so the watch is
rebuilt whenever the client has reconnected, and after any failure (the bucket not declared yet, a timeout). Each
rebuilt watch starts with the bucket's current values, so nothing written meanwhile is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

log = structlog.get_logger("backworks.kvwatch")

RETRY_DELAY = 1.0
"""Seconds before a failed watch is rebuilt."""
RECONNECT_CHECK = 1.0
"""Seconds between checks of whether the client reconnected (the watch is rebuilt then)."""


def reconnects(client: Client | None) -> int:
    """How many times ``client`` has reconnected (0 when it does not say, or there is none)."""
    stats = getattr(client, "stats", None)
    return int(stats.get("reconnects", 0)) if isinstance(stats, dict) else 0


async def keys(js: JetStreamContext, bucket: str) -> list[str]:
    """Every key of ``bucket`` that has a message, sorted: a value, or the marker a delete or purge left (reading
    such a key raises ``KeyDeletedError``, a ``KeyNotFoundError``). Empty for an empty bucket."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in info.state.subjects or {})


async def follow(
    client: Client,
    js: JetStreamContext,
    bucket: str,
    on_entry: Callable[[KeyValue.Entry], None],
    *,
    what: str,
    on_ready: Callable[[], None] | None = None,
    on_bucket: Callable[[KeyValue], None] | None = None,
) -> None:
    """Call ``on_entry`` for every key of ``bucket`` (its current values, then each put, delete and purge) until
    cancelled; ``on_ready`` after the current values of each (re)built watch; ``on_bucket`` with the bucket once
    it is found. ``what`` names the watch in the log line of an interruption."""
    while True:
        try:
            seen = reconnects(client)
            kv = await js.key_value(bucket)
            if on_bucket is not None:
                on_bucket(kv)
            watcher = await kv.watchall()
            try:
                while reconnects(client) == seen:
                    try:
                        entry = await asyncio.wait_for(anext(watcher), RECONNECT_CHECK)
                    except TimeoutError:
                        continue
                    if entry is None:  # the end of the current values
                        if on_ready is not None:
                            on_ready()
                        continue
                    on_entry(entry)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
            log.info(f"{what} watch rebuilt after a reconnect", bucket=bucket)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{what} watch interrupted; retrying", bucket=bucket, error=repr(exc))
            await asyncio.sleep(RETRY_DELAY)
