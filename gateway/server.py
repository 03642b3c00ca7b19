"""Runs the gateway under uvicorn."""

from __future__ import annotations

from typing import Any

import uvicorn

from backworks.gateway.app import GatewayState, build_app
from backworks.pipeline.blueprints import LoadedBlueprint


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """The gateway's uvicorn settings (the benchmark's floor and baseline use the same, so HTTP costs the same)."""
    return uvicorn.Config(
        app,
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


def run(blueprint: LoadedBlueprint, servers: list[str], host: str, port: int, *, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and shuts down gracefully)."""
    state = GatewayState(blueprint=blueprint, servers=servers, access_log=access_log)
    uvicorn.Server(uvicorn_config(build_app(state), host, port)).run()
