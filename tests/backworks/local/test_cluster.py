"""A loopback NATS cluster: routed nodes, R3 streams with a leader, a node lost and rejoining."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from backworks.contracts.names import PIPELINE_STREAM
from backworks.local.cluster import LocalCluster, _jetstream_ready
from backworks.local.errors import NotReady
from backworks.local.ports import free_port
from backworks.pipeline import broker
from backworks.pipeline.errors import ReplicasUnavailable
from tests.waiting import eventually


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster", 3) as running:
        yield running


async def pipeline_cluster(seeds: list[str]) -> tuple[str | None, list[tuple[str, bool]]]:
    client = await broker.connect(seeds, name="test-cluster")
    try:
        info = await broker.jetstream(client).stream_info(PIPELINE_STREAM)
        assert info.cluster is not None
        return info.cluster.leader, [(peer.name or "", bool(peer.current)) for peer in info.cluster.replicas or []]
    finally:
        await client.close()


async def test_streams_are_declared_at_r3_and_survive_losing_their_leader(cluster: LocalCluster) -> None:
    client = await broker.connect(cluster.seeds, name="test-declare")
    try:
        await broker.declare(broker.jetstream(client), replicas=3)
    finally:
        await client.close()
    leader, peers = await pipeline_cluster(cluster.seeds)
    assert leader in {"n1", "n2", "n3"}
    assert sorted([leader, *(name for name, _ in peers)]) == ["n1", "n2", "n3"]

    lost = cluster.index_of(leader)
    cluster.kill(lost)
    others = [url for index, url in enumerate(cluster.seeds) if index != lost]

    async def new_leader() -> bool:
        try:
            elected, _ = await pipeline_cluster(others)
        except Exception:
            return False
        return elected is not None and elected != leader

    await eventually(new_leader, timeout=30)

    cluster.restart(lost)

    async def rejoined() -> bool:
        try:
            _, replicas = await pipeline_cluster(cluster.seeds)
        except Exception:
            return False
        return len(replicas) == 2 and all(current for _, current in replicas)

    await eventually(rejoined, timeout=30)


async def test_a_cluster_smaller_than_the_replicas_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How long declare lets a fresh cluster learn its peers is not the point here: the refusal and its message are.
    monkeypatch.setattr(broker, "PLACEMENT_WAIT", 2.0)
    with LocalCluster(tmp_path / "pair", 2) as pair:
        client = await broker.connect(pair.seeds, name="test-declare")
        try:
            with pytest.raises(ReplicasUnavailable, match="cannot hold 3 replicas"):
                await broker.declare(broker.jetstream(client), replicas=3)
        finally:
            await client.close()


def test_every_node_lists_every_other_route(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", 3)
    for index, node in enumerate(cluster.nodes):
        others = [port for other, port in enumerate(cluster.route_ports) if other != index]
        assert f"server_name: n{index + 1}" in node.extra_config
        login = f"route:{cluster.keyring.route_secret()}@"
        assert all(f"nats-route://{login}127.0.0.1:{port}" in node.extra_config for port in others)
        assert f"listen: 127.0.0.1:{cluster.route_ports[index]}" in node.extra_config


def test_jetstream_not_ready_in_time_is_a_clear_error(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", 1, ports=[free_port()])  # nothing started: nobody answers
    with pytest.raises(NotReady, match="did not become ready within 0 s"):
        asyncio.run(_jetstream_ready(cluster.seeds, 0.4))
