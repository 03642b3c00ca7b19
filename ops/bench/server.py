"""The uvicorn settings the real gateway runs with (``gateway/server.py``), shared by the floor and baseline."""

from __future__ import annotations

from typing import Any

import uvicorn

from backworks.gateway.server import uvicorn_config

__all__ = ["serve", "uvicorn_config"]


def serve(app: Any, host: str, port: int) -> None:
    uvicorn.Server(uvicorn_config(app, host, port)).run()
