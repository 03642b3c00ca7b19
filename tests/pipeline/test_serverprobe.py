"""The server probe against a real nats-server: it greets at once; frozen (SIGSTOP) or gone, it does not."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from backworks.local.embedded import EmbeddedNats
from backworks.local.ports import free_port
from backworks.pipeline.serverprobe import address, answers
from tests.waiting import eventually


def every_thread_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped: ``kill`` returns before a busy thread on another CPU (or a vCPU the
    host has not scheduled) has taken the SIGSTOP, and such a thread may still accept and greet meanwhile."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def test_an_address_is_host_and_port_never_credentials() -> None:
    assert address(urlparse("nats://user:secret@nats-2.internal:4333")) == "nats-2.internal:4333"
    assert address(urlparse("nats://10.0.0.7")) == "10.0.0.7:4222"
    assert address(None) == ""


async def test_a_live_server_answers_a_frozen_or_stopped_one_does_not(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "store").start()
    try:
        assert server.process is not None
        pid = server.process.pid
        where = address(urlparse(server.url))
        assert await answers(where, timeout=5.0)
        os.kill(pid, signal.SIGSTOP)  # the kernel still accepts the connection; nobody greets
        try:
            await eventually(lambda: every_thread_stopped(pid), timeout=10.0)
            assert not await answers(where)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await answers(where, timeout=5.0), "resumed, it greets again"
    finally:
        server.stop()
    assert not await answers(where), "stopped: the connection is refused"
    assert not await answers(f"127.0.0.1:{free_port()}")
    for nonsense in ("not an address", "127.0.0.1:70000", "127.0.0.1:-1", ":4222", "host:"):
        assert not await answers(nonsense), nonsense
