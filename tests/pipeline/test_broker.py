"""Declaring Backworks' streams: replicas a single node cannot hold are refused with a way out."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from backworks.pipeline import broker
from backworks.pipeline.errors import ReplicasUnavailable


async def test_r3_on_a_single_node_is_refused_with_what_to_do(nats_client: Client) -> None:
    with pytest.raises(ReplicasUnavailable) as refused:
        await broker.declare(broker.jetstream(nats_client), replicas=3)
    message = str(refused.value)
    assert "single node" in message and "replicas: 1" in message and "--cluster 3" in message
