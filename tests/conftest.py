"""Shared fixtures: a real nats-server on a free loopback port, a connected client, replies, the example.

Conftest files are not imported; what test modules import lives in plain modules: ``tests.files``,
``tests.waiting``, ``tests.replies``, ``tests.stages``, ``tests.serving`` and ``tests.samples``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker, credentials
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.capabilities import ALLOW_FAULT_ENV
from tests.files import EXAMPLE
from tests.replies import REPLY_SUBJECTS, Replies


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own state directory (embedded broker store, nats.url)."""
    monkeypatch.setenv("BACKWORKS_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def _fresh_credential_names() -> Iterator[None]:
    """Credential names a loaded blueprint declares are process-wide: each test starts with the standard ones."""
    credentials.forget_declared()
    yield
    credentials.forget_declared()


@pytest.fixture
def allow_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to the ``fault`` plugin (``BACKWORKS_ALLOW_FAULT=1``) here and in every process started from here."""
    monkeypatch.setenv(ALLOW_FAULT_ENV, "1")


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """The test's process (and every process it starts) runs in Asia/Tokyo, UTC+9: stored times must not depend on
    the local time zone, and a naive local clock would be off by nine hours there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "Asia/Tokyo")
        time.tzset()
        assert time.localtime().tm_gmtoff == 9 * 3600, "no time zone data for Asia/Tokyo on this machine"
        yield
    time.tzset()


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


@pytest.fixture
async def replies(nats_client: Client) -> Replies:
    """What comes back on ``_INBOX.test.>`` from the moment the test starts."""
    collected = Replies()
    await nats_client.subscribe(REPLY_SUBJECTS, cb=collected.on_reply)
    return collected


@pytest.fixture
def example() -> LoadedBlueprint:
    """The hello example blueprint, loaded."""
    return blueprints.load(EXAMPLE)
