"""Connecting and declaring: replicas a single node cannot hold are refused with a way out; letting go is clean."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from nats.aio.client import Client

from backworks.local.embedded import EmbeddedNats
from backworks.local.ports import free_port
from backworks.pipeline import broker
from backworks.pipeline.errors import BrokerUnavailable, ReplicasUnavailable
from tests.waiting import eventually


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


def disconnected(client: Client) -> bool:
    return not client.is_connected


async def test_a_service_lets_go_of_its_connection_cleanly_also_while_the_broker_is_down(
    nats_server: EmbeddedNats,
) -> None:
    up = await broker.connect([nats_server.url], name="up")
    await broker.release(up)
    assert up.is_closed

    for _ in range(5):  # nats-py raised ConnectionResetError closing a client that holds writes for its reconnect
        if not nats_server.running:
            nats_server.start()
        away = await broker.connect([nats_server.url], name="away")
        await away.publish("bw.test", b"pending")
        nats_server.stop()
        await eventually(partial(disconnected, away))
        await away.publish("bw.test", b"while away")  # held for the reconnect: closing tries to write it
        await broker.release(away)
        assert away.is_closed
