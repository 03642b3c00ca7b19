"""A bare HTTP/1.1 endpoint: a fixed response from a raw asyncio protocol, to find the load generator's ceiling.

``python -m ops.bench.bare --port P`` answers every request with the same small response, so the
measured throughput is bounded by the load generator (and the loopback), not by any server logic.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

from backworks.local.ports import LOOPBACK

BODY = b'{"greeting":"Hello, bench!"}'
HEAD = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
RESPONSE = HEAD.encode() + BODY


class Bare(asyncio.Protocol):
    """Counts complete request heads in the buffer and writes one fixed response for each."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        heads = self.buffer.count(b"\r\n\r\n")
        if heads and self.transport is not None:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * heads)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(Bare, host, port)
    async with server:
        await stop.wait()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
