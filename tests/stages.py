"""Runs a blueprint's stage hosts inside the test process, against a real nats-server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.aio.client import Client

from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.stagehost import StageHost


@contextlib.asynccontextmanager
async def running_stages(
    loaded: LoadedBlueprint, client: Client, only: list[str] | None = None, replicas: int = 1
) -> AsyncIterator[dict[str, list[StageHost]]]:
    hosts: dict[str, list[StageHost]] = {}
    try:
        for name, instance in loaded.instances.items():
            if only is not None and name not in only:
                continue
            for _ in range(replicas):
                settings = {n: i.spec.breaker for n, i in loaded.instances.items()}
                host = StageHost(instance, client, breaker_settings=settings)
                await host.start()
                hosts.setdefault(name, []).append(host)
        yield hosts
    finally:
        for group in hosts.values():
            for host in group:
                await host.stop()
