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
PROBE_TIMEOUT = 0.5
"""Seconds a server has to greet a probe: a live server on the same network does it in well under a millisecond;
the margin is for the prober's own event loop on a loaded machine."""


def address(url: ParseResult | None) -> str:
    """``host:port`` of a server URL (never its user or password); empty when not connected."""
    if url is None or not url.hostname:
        return ""
    return f"{url.hostname}:{url.port or 4222}"


async def answers(server: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the NATS server at ``host:port`` greets a new connection within ``timeout`` seconds (an address
    that cannot be one, such as a port out of range, does not)."""
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            greeting = await reader.readexactly(len(GREETING))
    except Exception:  # refused, unreachable, unresolvable, timed out, closed early: no greeting
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return greeting == GREETING
