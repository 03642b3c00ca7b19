"""The server probe against a real nats-server: it greets at once; frozen (SIGSTOP) or gone, it does not."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from backworks.local.embedded import EmbeddedNats
from backworks.local.ports import free_port
from backworks.pipeline.serverprobe import address, answers


def test_an_address_is_host_and_port_never_credentials() -> None:
    assert address(urlparse("nats://user:secret@nats-2.internal:4333")) == "nats-2.internal:4333"
    assert address(urlparse("nats://10.0.0.7")) == "10.0.0.7:4222"
    assert address(None) == ""


async def test_a_live_server_answers_a_frozen_or_stopped_one_does_not(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "store").start()
    try:
        assert server.process is not None
        where = address(urlparse(server.url))
        assert await answers(where, timeout=5.0)
        os.kill(server.process.pid, signal.SIGSTOP)  # the kernel still accepts the connection; nobody greets
        try:
            assert not await answers(where)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await answers(where, timeout=5.0), "resumed, it greets again"
    finally:
        server.stop()
    assert not await answers(where), "stopped: the connection is refused"
    assert not await answers(f"127.0.0.1:{free_port()}")
    for nonsense in ("not an address", "127.0.0.1:70000", "127.0.0.1:-1", ":4222", "host:"):
        assert not await answers(nonsense), nonsense
