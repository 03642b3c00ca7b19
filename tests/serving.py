"""Serves a blueprint's gateway app inside the test process, against a real nats-server, over ASGI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import httpx

from backworks.gateway.app import GatewayState, build_app
from backworks.gateway.state import connect, disconnect
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.permissions import identities
from tests.waiting import eventually

Served = tuple[httpx.AsyncClient, GatewayState]
Serving = AbstractAsyncContextManager[Served]


class Gateway(Protocol):
    """The ``gateway`` fixture: ``async with gateway(loaded) as (http, state)`` serves ``loaded``."""

    def __call__(self, loaded: LoadedBlueprint) -> Serving: ...


@contextlib.asynccontextmanager
async def serving(loaded: LoadedBlueprint, server: EmbeddedNats) -> AsyncIterator[Served]:
    """A connected gateway for ``loaded`` and an HTTP client speaking to it; disconnected on exit.

    The server first trusts ``loaded``'s identities; the gateway connects as its own (``gateway``), with the key it
    finds in the test's state directory, so its permissions are the ones a deployment gets.
    """
    server.admit(identities(loaded).values())
    state = GatewayState(blueprint=loaded, servers=[server.url])
    app = build_app(state)
    await connect(state)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, state
    finally:
        await disconnect(state)


async def wait_live(*gateways: GatewayState, replicas: dict[str, int]) -> None:
    """Until every gateway sees ``replicas[instance]`` live replicas of each instance.

    A gateway moves past a non-critical stage it sees no live replica of, so a test that counts what a stage did
    waits for this before its first request.
    """

    def seen() -> bool:
        return all(
            state.liveness is not None and state.liveness.count(name) == count
            for state in gateways
            for name, count in replicas.items()
        )

    await eventually(seen)
