"""A planned hand-over: every Backworks stream and consumer leader moves off a node before it stops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_durable
from backworks.local.cluster import LocalCluster, node_name
from backworks.local.handover import groups, step_down
from backworks.pipeline import broker


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster", 3) as running:
        yield running


async def declared_with_a_consumer(seeds: list[str]) -> None:
    """R3 streams and buckets, and one stage's durable consumer (a replicated group of its own)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    client = await broker.connect(seeds, name="test-handover")
    try:
        js = broker.jetstream(client)
        await broker.declare(js, replicas=3)
        durable = stage_durable("stamp", Phase.REQUEST)
        await js.add_consumer(PIPELINE_STREAM, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT))
    finally:
        await client.close()


async def leaders(seeds: list[str]) -> dict[str, str | None]:
    client = await broker.connect(seeds, name="test-handover-look")
    try:
        return {group.label: group.leader for group in await groups(broker.jetstream(client))}
    finally:
        await client.close()


async def test_stepping_a_node_down_moves_every_stream_and_consumer_it_leads(cluster: LocalCluster) -> None:
    await declared_with_a_consumer(cluster.seeds)
    before = await leaders(cluster.seeds)
    assert any(" > " in label for label in before), "a consumer group is among them"
    node = before[PIPELINE_STREAM]
    assert node is not None

    moved = await step_down(cluster.seeds, node)

    after = await leaders(cluster.seeds)
    assert PIPELINE_STREAM in moved
    assert set(moved) == {label for label, leader in before.items() if leader == node}
    assert node not in after.values(), after
    assert None not in after.values(), "every group has a leader again"


async def test_a_node_leading_nothing_has_nothing_to_move(cluster: LocalCluster) -> None:
    await declared_with_a_consumer(cluster.seeds)
    node = (await leaders(cluster.seeds))[PIPELINE_STREAM]
    assert node is not None
    await step_down(cluster.seeds, node)
    assert await step_down(cluster.seeds, node) == []


def test_a_planned_restart_hands_the_node_over_and_brings_it_back(cluster: LocalCluster) -> None:
    import asyncio

    asyncio.run(declared_with_a_consumer(cluster.seeds))
    node = asyncio.run(leaders(cluster.seeds))[PIPELINE_STREAM]
    assert node is not None
    index = cluster.index_of(node)
    stopping = cluster.nodes[index].process
    assert stopping is not None

    began = time.monotonic()
    moved = cluster.hand_over(index, lame_duck=True)
    took = time.monotonic() - began

    assert PIPELINE_STREAM in moved
    assert stopping.returncode is not None
    assert took < 30, f"the hand-over took {took:.1f} s"
    log = (cluster.base / node_name(index) / "nats-server.log").read_text()
    assert "Entering lame duck mode" in log
    cluster.restart(index)
    cluster.wait_current(timeout=60)
    assert cluster.nodes[index].running


def test_the_stepdown_command_moves_the_leaders_and_refuses_an_unknown_node(cluster: LocalCluster) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from backworks.cli import app

    asyncio.run(declared_with_a_consumer(cluster.seeds))
    node = asyncio.run(leaders(cluster.seeds))[PIPELINE_STREAM]
    assert node is not None
    seeds = ",".join(cluster.seeds)
    runner = CliRunner()

    done = runner.invoke(app, ["nats", "stepdown", node, "--nats", seeds, "--format", "json"])
    assert done.exit_code == 0, done.output
    assert PIPELINE_STREAM in json.loads(done.stdout)["moved"]
    assert node not in asyncio.run(leaders(cluster.seeds)).values()

    unknown = runner.invoke(app, ["nats", "stepdown", "n9", "--nats", seeds])
    assert unknown.exit_code == 1
    assert "'n9'" in unknown.output and "n1" in unknown.output
