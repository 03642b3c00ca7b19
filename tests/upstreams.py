"""Small HTTP upstreams for proxy tests: uvicorn + Starlette in a thread, on a free 127.0.0.1 port.

Each counts the requests it served and remembers the last one; tests change how it answers (status, delay,
body size, health) while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from backworks.local.ports import free_port

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
START_TIMEOUT = 10.0


@dataclass
class Upstream:
    """How the upstream answers, and what it saw."""

    name: str
    status: int = 200
    delay: float = 0.0
    body_size: int | None = None
    """Answer with this many bytes instead of the JSON echo."""
    chunked: bool = False
    """Send ``body_size`` bytes in chunks without a Content-Length."""
    healthy: bool = True
    hits: int = 0
    """Requests served, health checks excluded."""
    health_checks: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def stop(self) -> None:
        """Stop serving (its port then refuses connections), as a crashed upstream would."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)

    async def endpoint(self, request: Request) -> Response:
        if request.url.path == "/health":
            self.health_checks += 1
            return Response(status_code=200 if self.healthy else 503)
        self.hits += 1
        body = await request.body()
        self.last = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
            "body": body,
        }
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.body_size is not None and self.chunked:
            return StreamingResponse(_chunks(self.body_size), status_code=self.status)
        if self.body_size is not None:
            return Response(b"x" * self.body_size, status_code=self.status, media_type="application/octet-stream")
        echo = {"upstream": self.name, "method": request.method, "path": request.url.path, "body": body.decode()}
        return JSONResponse(echo, status_code=self.status, headers={"keep-alive": "timeout=5", "x-upstream": self.name})


async def _chunks(size: int, chunk: int = 16 * 1024) -> AsyncIterator[bytes]:
    while size > 0:
        yield b"x" * min(chunk, size)
        size -= chunk


@contextlib.contextmanager
def running(upstream: Upstream) -> Iterator[Upstream]:
    """Serve ``upstream`` until the block ends (``stop`` ends it earlier, as a crash would)."""
    app = Starlette(routes=[Route("/{path:path}", upstream.endpoint, methods=METHODS)])
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", lifespan="off", ws="none", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"upstream-{upstream.name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"upstream {upstream.name} did not start on port {port}")
        time.sleep(0.02)
    upstream.url = f"http://127.0.0.1:{port}"
    upstream.server, upstream.thread = server, thread
    try:
        yield upstream
    finally:
        upstream.stop()
