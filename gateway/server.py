"""Runs the gateway under uvicorn, with the edge's limits (``backworks.gateway.edge``)."""

from __future__ import annotations

from typing import Any

import uvicorn

from backworks.contracts.blueprint import GatewaySettings
from backworks.gateway.app import GatewayState, build_app
from backworks.gateway.connections import (
    DEFAULT_MAX_CONNECTIONS,
    ConnectionGuard,
    EdgeReport,
    EdgeStats,
    connection_limit,
    raise_descriptor_limit,
)
from backworks.gateway.edge import edge_protocol
from backworks.pipeline.blueprints import LoadedBlueprint


def uvicorn_config(
    app: Any, host: str, port: int, settings: GatewaySettings | None = None, stats: EdgeStats | None = None
) -> uvicorn.Config:
    """The gateway's uvicorn settings (the benchmark's floor and baseline use the same, so HTTP costs the same).

    ``settings`` gives the edge's limits (default: the blueprint defaults); what the edge counts goes to
    ``stats`` (the gateway's health report shows it).
    """
    settings = settings or GatewaySettings()
    guard = ConnectionGuard(connection_limit(settings.max_connections), EdgeReport(stats or EdgeStats()))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=edge_protocol(settings, guard),
        ws="none",  # the gateway serves no WebSocket; an upgraded connection would leave the connection guard
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )


def run(
    blueprint: LoadedBlueprint,
    servers: list[str],
    host: str,
    port: int,
    *,
    access_log: bool = False,
    revision: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and shuts down gracefully)."""
    settings = blueprint.model.gateway
    raise_descriptor_limit(settings.max_connections or DEFAULT_MAX_CONNECTIONS)
    state = GatewayState(blueprint=blueprint, servers=servers, access_log=access_log, revision=revision)
    uvicorn.Server(uvicorn_config(build_app(state), host, port, settings, state.edge)).run()
