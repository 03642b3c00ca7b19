"""Liveness against a real nats-server: heartbeats make a replica live, a clean stop removes it at once, a
silent one goes stale after ``LIVENESS_TTL``, one gone for ``FORGET_AFTER`` is forgotten."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from nats.aio.client import Client

from backworks.contracts.names import REGISTRY_BUCKET, Phase, registry_key
from backworks.contracts.registry import ReplicaInfo
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import broker, liveness, serverprobe
from backworks.pipeline.liveness import HEARTBEAT_INTERVAL, LIVENESS_TTL, Heartbeat, LivenessView
from tests.waiting import eventually


def info(instance: str = "auth", replica: str = "r1", processed: int = 0) -> ReplicaInfo:
    now = time.time()
    return ReplicaInfo(
        instance=instance, replica=replica, plugin="api-key", version="1.0.0", phases=[Phase.REQUEST],
        pid=1234, host="test", started_at=now, sent_at=now, processed=processed,
    )  # fmt: skip


@pytest.fixture
async def view(nats_client: Client) -> AsyncIterator[LivenessView]:
    watching = LivenessView(broker.jetstream(nats_client))
    await watching.start()
    await eventually(watching.ready.is_set)
    yield watching
    await watching.stop()


async def put(nats_client: Client, item: ReplicaInfo) -> None:
    kv = await broker.jetstream(nats_client).key_value(REGISTRY_BUCKET)
    await kv.put(registry_key(item.instance, item.replica), item.model_dump_json().encode())


async def test_a_heartbeating_replica_is_live_and_a_clean_stop_removes_it(
    nats_client: Client, view: LivenessView
) -> None:
    beats = 0

    async def snapshot() -> ReplicaInfo:
        nonlocal beats
        beats += 1
        return info(processed=beats)

    heartbeat = Heartbeat(broker.jetstream(nats_client), snapshot)
    await heartbeat.start()
    try:
        await eventually(lambda: view.count("auth") == 1)
        (seen,) = view.live("auth")
        assert (seen.instance, seen.replica, seen.plugin) == ("auth", "r1", "api-key")
        assert view.count("other") == 0
        # It keeps beating: later heartbeats replace the entry (the latest figures are what forwarders see).
        await eventually(lambda: view.live("auth")[0].processed >= 3, timeout=HEARTBEAT_INTERVAL * 20)
    finally:
        await heartbeat.stop()
    await eventually(lambda: view.count("auth") == 0, timeout=LIVENESS_TTL / 2)  # deleted, not waited out
    assert "auth.r1" not in view.replicas.get("auth", {})


async def test_a_silent_replica_goes_stale_after_the_ttl(nats_client: Client, view: LivenessView) -> None:
    await put(nats_client, info(replica="killed"))
    await eventually(lambda: view.count("auth") == 1)
    arrived = view.replicas["auth"]["auth.killed"].at
    assert [r.replica for r in view.live("auth", now=arrived + LIVENESS_TTL)] == ["killed"]
    assert view.live("auth", now=arrived + LIVENESS_TTL + 0.01) == []


async def test_replicas_gone_for_long_are_forgotten_and_bad_entries_ignored(
    nats_client: Client, view: LivenessView, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(liveness, "FORGET_AFTER", 0.2)
    await put(nats_client, info(replica="old"))
    await eventually(lambda: "auth.old" in view.replicas.get("auth", {}))
    await asyncio.sleep(0.3)  # longer than FORGET_AFTER, by the watcher's clock
    kv = await broker.jetstream(nats_client).key_value(REGISTRY_BUCKET)
    await kv.put("auth.garbage", b"not json")
    await put(nats_client, info(replica="new"))
    await eventually(lambda: "auth.new" in view.replicas.get("auth", {}))
    assert set(view.replicas["auth"]) == {"auth.new"}, "the old one was forgotten, the garbage never added"


async def test_a_view_started_later_sees_the_replicas_already_there(nats_client: Client) -> None:
    await put(nats_client, info(replica="early"))
    late = LivenessView(broker.jetstream(nats_client))
    await late.start()
    try:
        await eventually(late.ready.is_set)
        assert [r.replica for r in late.live("auth")] == ["early"], "the initial values came before ready"
    finally:
        await late.stop()


async def test_liveness_stop_ends_the_watch_even_if_a_broker_call_swallows_the_cancellation() -> None:
    swallowed = 0
    forever = asyncio.Event()

    class Watcher:
        def __aiter__(self) -> Watcher:
            return self

        async def __anext__(self) -> None:
            await forever.wait()

    class Bucket:
        async def watchall(self) -> Watcher:
            return Watcher()

    class SwallowingJetStream:
        async def key_value(self, bucket: str) -> Bucket:
            nonlocal swallowed
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                swallowed += 1  # what nats-py's request (3.11's wait_for) does when the reply lands as it is cancelled
            return Bucket()

    view = LivenessView(SwallowingJetStream())  # type: ignore[arg-type]  # only key_value is used
    await view.start()
    await asyncio.sleep(0.05)  # inside key_value
    await asyncio.wait_for(view.stop(), 15.0)
    assert swallowed == 1


async def test_absence_is_only_claimed_after_watching_for_a_whole_ttl(nats_client: Client) -> None:
    """A stage that starts beside a new view is not called dead before its first heartbeat could arrive."""
    watching = LivenessView(broker.jetstream(nats_client))
    await watching.start()
    try:
        await eventually(watching.ready.is_set)
        assert watching.watching_since is not None
        assert not watching.absent("auth"), "watched for less than a TTL: nobody is presumed dead"
        assert watching.absent("auth", now=watching.watching_since + LIVENESS_TTL)
        await put(nats_client, info())
        await eventually(lambda: watching.count("auth") == 1)
        assert not watching.absent("auth", now=watching.watching_since + LIVENESS_TTL)
        heard = watching.heard_at
        assert watching.absent("other", now=heard + LIVENESS_TTL)
        # Silent although auth was live: the watch broke (a stream leader change), nobody is called dead.
        assert not watching.absent("other", now=heard + LIVENESS_TTL + 0.5)
        watching.replicas.clear()  # nobody was live: silence is just an empty registry
        assert watching.absent("other", now=heard + LIVENESS_TTL + 0.5)
    finally:
        await watching.stop()


async def test_the_watch_is_rebuilt_at_once_after_the_broker_restarts(tmp_path: Path) -> None:
    """A broker restart must not leave live replicas looking dead until the silent watch times out."""
    server = EmbeddedNats(tmp_path / "store", log_file=tmp_path / "nats.log")
    server.start()
    client = await broker.connect([server.url], name="test-restart")
    try:
        await broker.declare(broker.jetstream(client))
        watching = LivenessView(broker.jetstream(client))
        await watching.start()
        heartbeat = Heartbeat(broker.jetstream(client), lambda: asyncio.sleep(0, info()))
        await heartbeat.start()
        try:
            await eventually(lambda: watching.count("auth") == 1)
            server.stop()
            await eventually(lambda: watching.count("auth") == 0, timeout=LIVENESS_TTL * 10)
            server.start()
            back = time.monotonic()
            await eventually(lambda: watching.count("auth") == 1, timeout=liveness.WATCH_SILENCE * 3)
            seen_after = time.monotonic() - back
            assert seen_after < liveness.WATCH_SILENCE / 2, f"seen again {seen_after:.1f} s after the broker was back"
        finally:
            await heartbeat.stop()
            await watching.stop()
    finally:
        await client.close()
        server.stop()


async def test_a_replica_whose_server_stops_answering_is_waited_for_until_its_failover_grace(
    nats_client: Client, view: LivenessView, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster node frozen: its replicas are silent but failing over, not dead. One killed elsewhere is dead."""
    monkeypatch.setattr(liveness, "FAILOVER_GRACE", 3 * LIVENESS_TTL)
    node = EmbeddedNats(tmp_path / "node-b").start()  # the node the stranded replica is connected to
    assert node.process is not None
    here = serverprobe.address(nats_client.connected_url)

    async def steady() -> ReplicaInfo:  # keeps the view hearing (a view that hears nothing is deaf instead)
        return info(instance="steady").model_copy(update={"server": here})

    heartbeat = Heartbeat(broker.jetstream(nats_client), steady)
    await heartbeat.start()
    elsewhere = serverprobe.address(urlparse(node.url))
    # Node B stands for another node of the cluster: a real cluster's client knows every node from the server's INFO.
    monkeypatch.setattr(view, "_known_servers", lambda: {here, elsewhere})
    try:
        await put(nats_client, info(replica="stranded").model_copy(update={"server": elsewhere}))
        await put(nats_client, info(instance="gone", replica="killed").model_copy(update={"server": here}))
        await eventually(lambda: view.count("auth") == 1 and view.count("gone") == 1)
        os.kill(node.process.pid, signal.SIGSTOP)
        try:
            await eventually(lambda: view.absent("gone"), timeout=LIVENESS_TTL * 10)
            assert not view.stranded("gone"), "its server answers: it died"
            await eventually(lambda: view.stranded("auth"), timeout=LIVENESS_TTL * 10)
            assert not view.absent("auth"), "its server does not answer: failing over"
            assert not view.live("auth"), "stranded is not live: nothing counts it as a serving replica"
            await eventually(lambda: view.absent("auth"), timeout=liveness.FAILOVER_GRACE * 5)
        finally:
            os.kill(node.process.pid, signal.SIGCONT)
    finally:
        await heartbeat.stop()
        node.stop()


async def test_a_server_this_process_does_not_know_is_never_probed(
    nats_client: Client, view: LivenessView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat cannot make every watcher connect to an address of its choosing: only known servers are asked."""
    probed: list[str] = []

    async def answers(server: str, timeout: float = 0.0) -> bool:
        probed.append(server)
        return False

    monkeypatch.setattr(serverprobe, "answers", answers)
    here = serverprobe.address(nats_client.connected_url)
    await put(nats_client, info(replica="aimed").model_copy(update={"server": "10.9.8.7:4222"}))
    await put(nats_client, info(instance="gone", replica="killed").model_copy(update={"server": here}))
    await eventually(lambda: view.count("auth") == 1 and view.count("gone") == 1)
    await eventually(lambda: view.stranded("gone"), timeout=LIVENESS_TTL * 10)
    assert here in probed and "10.9.8.7:4222" not in probed
    assert not view.stranded("auth")
