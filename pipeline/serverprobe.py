"""Whether a NATS server answers at all: it greets every new connection with an ``INFO`` line at once.

Used to tell a replica that died from one whose server stopped answering (a cluster node frozen, partitioned
or killed): the replicas of such a node fail over to another node within seconds (``broker.PING_INTERVAL`` x
``broker.MAX_PINGS``, then a reconnect), so a view that watches them waits for that instead of calling them gone.
The probe opens a plain TCP connection and reads the greeting; it never authenticates or sends anything. A
frozen process still completes the TCP handshake (the kernel does it) but never greets: no ``INFO`` within the
timeout is "not answering", like a refused connection. A server configured to expect TLS before its greeting
(``handshake_first``) never greets a plain probe either: there, replicas whose heartbeats stop are waited for up
to ``liveness.FAILOVER_GRACE`` before they count as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import ParseResult

GREETING = b"INFO "
PROBE_TIMEOUT = 0.3
"""Seconds a server has to greet a probe: a live server on the same network does it in well under a millisecond."""


def address(url: ParseResult | None) -> str:
    """``host:port`` of a server URL (never its user or password); empty when not connected."""
    if url is None or not url.hostname:
        return ""
    return f"{url.hostname}:{url.port or 4222}"


async def answers(server: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the NATS server at ``host:port`` greets a new connection within ``timeout`` seconds."""
    host, _, port = server.rpartition(":")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            greeting = await reader.readexactly(len(GREETING))
    except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return greeting == GREETING
