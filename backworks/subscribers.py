"""What ``backworks audit serve`` and ``backworks analytics serve`` share: the blueprint and broker they run
against, the ``tap`` identity they connect as, signals that stop them cleanly, and one way to fail."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from backworks.console import fail
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.servicemetrics import DEFAULT_METRICS_HOST, SubscriberMetrics, serve_metrics

Serve = Callable[[LoadedBlueprint, list[str], asyncio.Event, SubscriberMetrics | None], Awaitable[None]]
"""A subscriber's main loop: runs against ``servers`` until the event is set, counting into the metrics if any."""


def run_subscriber(
    service: str,
    blueprint: Path,
    nats: str | None,
    serve: Serve,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
) -> None:
    """Run ``serve`` as the least-privilege ``tap`` identity until SIGINT/SIGTERM; a ``PipelineError`` exits 1
    with its message. With ``metrics_port``, its Prometheus metrics are served on ``metrics_host``.

    On the embedded broker of this state directory the blueprint's identities are admitted first (as
    ``gateway``/``serve`` do), so a keyring written by an older version gets the tap's current permissions.
    """
    import structlog

    from backworks.cli import admit_services, configure_logs, load_or_exit, resolve_servers
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.permissions import TAP

    configure_logs(service)
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    admit_services(loaded, servers, TAP)
    metrics = SubscriberMetrics() if metrics_port is not None else None
    served = None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(loaded, servers, stop, metrics)

    try:
        if metrics is not None and metrics_port is not None:
            served = serve_metrics(metrics.registry, metrics_port, metrics_host)
            structlog.get_logger(f"backworks.{service}").info("metrics served", url=served.url)
        asyncio.run(main())
    except PipelineError as exc:
        raise fail(str(exc)) from None
    finally:
        if served is not None:
            served.stop()
