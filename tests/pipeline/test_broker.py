"""Declaring Backworks' streams: replicas a single node cannot hold are refused with a way out."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from backworks.local.ports import free_port
from backworks.pipeline import broker
from backworks.pipeline.errors import BrokerUnavailable, ReplicasUnavailable


async def test_r3_on_a_single_node_is_refused_with_what_to_do(nats_client: Client) -> None:
    with pytest.raises(ReplicasUnavailable) as refused:
        await broker.declare(broker.jetstream(nats_client), replicas=3)
    message = str(refused.value)
    assert "single node" in message and "replicas: 1" in message and "--cluster 3" in message


async def test_a_broker_that_is_not_there_is_a_clear_error_not_a_hang() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(BrokerUnavailable) as refused:
        await asyncio.wait_for(broker.connect([url], name="test", patience=1.0), 30)
    message = str(refused.value)
    assert url in message and "no server answered within 1 s" in message, message
    assert "Connect call failed" in message, "the last connection error is named"
