"""What ``backworks audit serve`` and ``backworks analytics serve`` share: the blueprint and broker they run
against, the ``tap`` identity they connect as, signals that stop them cleanly, and one way to fail."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from backworks.console import fail
from backworks.pipeline.blueprints import LoadedBlueprint

Serve = Callable[[LoadedBlueprint, list[str], asyncio.Event], Awaitable[None]]
"""A subscriber's main loop: runs against ``servers`` until the event is set."""


def run_subscriber(service: str, blueprint: Path, nats: str | None, serve: Serve) -> None:
    """Run ``serve`` as the least-privilege ``tap`` identity until SIGINT/SIGTERM; a ``PipelineError`` exits 1
    with its message.

    On the embedded broker of this state directory the blueprint's identities are admitted first (as
    ``gateway``/``serve`` do), so a keyring written by an older version gets the tap's current permissions.
    """
    from backworks.cli import admit_services, configure_logs, load_or_exit, resolve_servers
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.permissions import TAP

    configure_logs(service)
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    admit_services(loaded, servers, TAP)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(loaded, servers, stop)

    try:
        asyncio.run(main())
    except PipelineError as exc:
        raise fail(str(exc)) from None
