"""Shared fixtures: a real nats-server on a free loopback port, a connected client, blueprints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.envelope import Envelope
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.capabilities import ALLOW_FAULT_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello" / "blueprint.yaml"


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own state directory (embedded broker store, nats.url)."""
    monkeypatch.setenv("BACKWORKS_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def allow_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to the ``fault`` plugin (``BACKWORKS_ALLOW_FAULT=1``) here and in every process started from here."""
    monkeypatch.setenv(ALLOW_FAULT_ENV, "1")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real nats-server with JetStream on a free 127.0.0.1 port, stopped after the test."""
    server = EmbeddedNats(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log")
    with server:
        yield server


@pytest.fixture
async def nats_client(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A client connected to ``nats_server`` with Backworks' streams and buckets declared."""
    client = await broker.connect([nats_server.url], name="test")
    await broker.declare(broker.jetstream(client), storage="memory")
    yield client
    await client.close()


class Replies:
    """Envelopes that reached ``_INBOX.test.>``, the reply subject tests give their envelopes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self.seen: list[Envelope] = []

    async def on_reply(self, msg: Msg) -> None:
        envelope = Envelope.from_json(msg.data)
        self.seen.append(envelope)
        await self.queue.put(envelope)

    async def next(self, timeout: float = 5.0) -> Envelope:
        return await asyncio.wait_for(self.queue.get(), timeout)


@pytest.fixture
async def replies(nats_client: Client) -> Replies:
    collected = Replies()
    await nats_client.subscribe("_INBOX.test.>", cb=collected.on_reply)
    return collected


@pytest.fixture
def example() -> LoadedBlueprint:
    return blueprints.load(EXAMPLE)


def write_blueprint(tmp_path: Path, text: str, name: str = "blueprint.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def eventually(predicate: object, timeout: float = 5.0, interval: float = 0.05) -> None:
    """Wait until ``predicate()`` is true (sync or async), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
