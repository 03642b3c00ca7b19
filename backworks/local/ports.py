"""Free loopback ports."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)
"""Linux's default range of the source ports it gives outgoing connections, when the file cannot be read."""
LOWEST_PORT = 10000
"""The lowest port ``free_port`` chooses (below are registered services' ports)."""
ATTEMPTS = 100


def ephemeral_range(source: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The ports the kernel hands out as the source port of outgoing connections (``ip_local_port_range``)."""
    try:
        low, high = (int(field) for field in source.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def free_port(host: str = LOOPBACK, ephemeral: tuple[int, int] | None = None) -> int:
    """A port nothing uses right now, chosen outside the kernel's ephemeral range.

    The port is bound later by another process (nats-server's client and route ports, uvicorn). A port from the
    ephemeral range (what binding port 0 returns) can meanwhile become the source port of any outgoing connection on
    the machine, and the server then fails with "address already in use" (seen once in five CI runs: a test cluster
    node's route port, taken while the other nodes were connecting). Outside that range only a process binding that
    very port can take it. When the range leaves no room (or no port there is free), the OS picks one.
    """
    low, high = ephemeral or ephemeral_range()
    spans = [span for span in (range(LOWEST_PORT, min(low, 65536)), range(max(high + 1, LOWEST_PORT), 65536)) if span]
    total = sum(len(span) for span in spans)
    for _ in range(ATTEMPTS if total else 0):
        index = secrets.randbelow(total)
        port = spans[0][index] if index < len(spans[0]) else spans[1][index - len(spans[0])]
        if _bindable(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _bindable(host: str, port: int, *, reuse_address: bool = False) -> bool:
    """Whether ``port`` can be bound on ``host`` now. Without ``reuse_address`` a port with connections still in
    TIME_WAIT counts as taken too; with it, as servers (uvicorn, nats-server) bind their ports."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_free(host: str, port: int, option: str) -> None:
    """Raise ``PortInUse`` unless ``port`` can be bound on ``host`` right now (as uvicorn/nats-server bind it)."""
    from backworks.local.errors import PortInUse

    bind_host = "" if host in ("0.0.0.0", "::") else host
    if not _bindable(bind_host, port, reuse_address=True):
        raise PortInUse(host, port, option)
