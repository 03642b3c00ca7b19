"""FleetBreakers on their own NATS connections, as separate processes of the fleet would have."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client

from backworks.contracts.blueprint import BreakerSettings
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import broker
from backworks.pipeline.breakers import FleetBreakers

MakeBreakers = Callable[[dict[str, BreakerSettings], str], Awaitable[FleetBreakers]]  # (settings, replica)


@pytest.fixture(autouse=True)
def _in_a_far_time_zone(far_from_utc: None) -> None:
    """Every breaker test runs in UTC+9 (``far_from_utc``): stored breaker times must not depend on the zone."""


@pytest.fixture
async def make_breakers(nats_server: EmbeddedNats, nats_client: Client) -> AsyncIterator[MakeBreakers]:
    """Start FleetBreakers, each on its own NATS connection (``nats_client`` has declared the bucket)."""
    made: list[tuple[FleetBreakers, Client]] = []

    async def make(config: dict[str, BreakerSettings], replica: str) -> FleetBreakers:
        client = await broker.connect([nats_server.url], name=replica)
        fleet = FleetBreakers(broker.jetstream(client), config, replica)
        made.append((fleet, client))
        await fleet.start()
        return fleet

    yield make
    for fleet, client in reversed(made):
        await fleet.stop()
        await client.close()
