"""Which NATS servers a command talks to (the server-list parser is ``contracts.blueprint.split_servers``).

Every command resolves its broker the same way: ``--nats`` if given, else the blueprint's ``nats.url``, else
(``embedded``, or no blueprint at all) the embedded broker that ``backworks nats``/``backworks up`` recorded
in this state directory.
"""

from __future__ import annotations

from urllib.parse import urlparse

from backworks.contracts.blueprint import EMBEDDED, split_servers
from backworks.local.ports import LOOPBACK
from backworks.local.state import recorded_nats_url

DEFAULT_NATS_PORT = 4222


def address(server: str) -> tuple[str, int]:
    """``nats://host:port`` (or ``host:port``) -> (host, port), with NATS' defaults for what is left out."""
    parsed = urlparse(server if "://" in server else f"nats://{server}")
    return parsed.hostname or LOOPBACK, parsed.port or DEFAULT_NATS_PORT


def resolve(given: str | None, configured: str = EMBEDDED) -> list[str]:
    """``--nats`` (``given``), else ``configured`` (a blueprint's ``nats.url``), else the recorded embedded broker.

    Empty when the blueprint (or no blueprint) means the embedded broker and none is recorded here.
    """
    if given and given.strip():
        return split_servers(given)
    if configured.strip() not in ("", EMBEDDED):
        return split_servers(configured)
    recorded = recorded_nats_url()
    return split_servers(recorded) if recorded else []
