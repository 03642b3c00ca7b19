"""``broker.reconnected``: a caller waits through the whole of nats-py's reconnect, handshake included."""

from __future__ import annotations

import asyncio
from typing import cast

from nats.aio.client import Client

from backworks.pipeline import broker


class Reconnecting:
    """nats-py's status sequence during a reconnect: RECONNECTING, CONNECTING (the handshake), then CONNECTED."""

    def __init__(self, phases: list[str]) -> None:
        self.phases = phases

    def advance(self) -> None:
        if len(self.phases) > 1:
            self.phases.pop(0)

    @property
    def is_connected(self) -> bool:
        return self.phases[0] == "connected"

    @property
    def is_reconnecting(self) -> bool:
        return self.phases[0] == "reconnecting"

    @property
    def is_connecting(self) -> bool:
        return self.phases[0] == "connecting"


async def _ticking(client: Reconnecting) -> None:
    while True:
        await asyncio.sleep(broker.RECONNECT_POLL)
        client.advance()


async def test_waits_through_the_handshake_of_a_reconnect() -> None:
    client = Reconnecting(["connecting"] * 3 + ["reconnecting"] * 3 + ["connecting"] * 3 + ["connected"])
    ticker = asyncio.create_task(_ticking(client))
    try:
        assert await broker.reconnected(cast(Client, client), grace=10.0)
    finally:
        ticker.cancel()


async def test_gives_up_after_the_grace() -> None:
    client = Reconnecting(["reconnecting"])
    assert not await broker.reconnected(cast(Client, client), grace=0.2)


async def test_a_closed_client_is_not_waited_for() -> None:
    client = Reconnecting(["closed"])
    assert not await asyncio.wait_for(broker.reconnected(cast(Client, client), grace=60.0), 5)
