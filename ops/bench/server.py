"""The uvicorn settings the real gateway runs with (``gateway/server.py``), shared by the floor and baseline."""

from __future__ import annotations

from typing import Any

import uvicorn


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """Same loop, HTTP parser, lifespan and logging as the gateway, so the HTTP layer costs the same."""
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


def serve(app: Any, host: str, port: int) -> None:
    uvicorn.Server(uvicorn_config(app, host, port)).run()
