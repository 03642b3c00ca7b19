"""Runs the gateway under uvicorn."""

from __future__ import annotations

import uvicorn

from gateway.app import GatewayState, build_app
from pipeline.blueprints import LoadedBlueprint


def run(blueprint: LoadedBlueprint, servers: list[str], host: str, port: int, *, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and shuts down gracefully)."""
    state = GatewayState(blueprint=blueprint, servers=servers, access_log=access_log)
    config = uvicorn.Config(
        build_app(state),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
