from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog
from nats.aio.client import Client
from structlog.testing import capture_logs

from backworks.contracts.blueprint import PluginInstance
from backworks.contracts.envelope import Envelope
from backworks.contracts.registry import ReplicaInfo
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance
from backworks.pipeline.forwarder import Forwarder
from backworks.pipeline.liveness import HEARTBEAT_INTERVAL, Heartbeat
from backworks.pipeline.plugin import EmptyConfig, Health
from backworks.pipeline.stagehost import StageHost, ack_wait_for
from tests.files import write_blueprint
from tests.replies import Replies
from tests.samples import Passthrough
from tests.stages import running_stages
from tests.waiting import eventually


def new_envelope(loaded: LoadedBlueprint, reply_to: str, deadline_s: float = 5.0) -> Envelope:
    return Envelope(
        route="hello",
        method="GET",
        path="/hello/ann",
        path_params={"name": "ann"},
        deadline=time.time() + deadline_s,
        reply_to=reply_to,
        itinerary=loaded.itinerary("hello"),
    )


async def send(client: Client, envelope: Envelope) -> None:
    """The gateway's first hand-off, ungated: straight to the envelope's current stage."""
    forwarder = Forwarder(client, broker.jetstream(client), {}, "test", gated=False)
    await forwarder.start()
    try:
        await forwarder.forward(envelope)
    finally:
        await forwarder.stop()


async def test_an_envelope_passes_every_stage_and_returns_to_the_reply_subject(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    async with running_stages(example, nats_client):
        await send(nats_client, new_envelope(example, "_INBOX.test.1"))
        done = await replies.next()
    assert done.response is not None
    assert done.response.status == 200
    assert done.response.body == b'{"greeting": "Hello, ann!"}'
    assert done.response.header("x-content-type-options") == "nosniff"
    assert done.header("x-stamped") == "yes"
    assert [t.stage for t in done.timings] == ["stamp.request", "hello-handler.request", "secure.response"]
    assert done.cursor == len(done.itinerary)


async def test_replicas_share_the_durable_and_each_message_is_handled_once(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    async with running_stages(example, nats_client, replicas=2) as hosts:
        for index in range(40):
            await send(nats_client, new_envelope(example, f"_INBOX.test.{index}"))
        await eventually(lambda: len(replies.seen) == 40)
        await asyncio.sleep(0.2)  # room for a duplicate to show up
        per_replica = [host.processed for host in hosts["stamp"]]
    assert len(replies.seen) == 40
    assert len({r.id for r in replies.seen}) == 40
    assert sum(per_replica) == 40


async def test_a_repeated_hand_off_is_dropped_by_msg_id(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    envelope = new_envelope(example, "_INBOX.test.dup")
    async with running_stages(example, nats_client):
        await send(nats_client, envelope)
        await send(nats_client, envelope)
        await eventually(lambda: len(replies.seen) >= 1)
        await asyncio.sleep(0.3)
    assert len(replies.seen) == 1


async def test_expired_envelopes_are_dropped_not_processed(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    await send(nats_client, new_envelope(example, "_INBOX.test.old", deadline_s=-1))
    async with running_stages(example, nats_client) as hosts:
        await eventually(lambda: not hosts["stamp"][0].consumers[0].inflight)
        await asyncio.sleep(0.3)
        info = await broker.jetstream(nats_client).consumer_info("BW_PIPELINE", "bw-stamp-request")
    assert replies.seen == []
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_stage_started_after_the_request_still_serves_it(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    envelope = new_envelope(example, "_INBOX.test.late")
    envelope.cursor = 2  # waiting for secure.response, which has no consumer yet
    js = broker.jetstream(nats_client)
    await js.publish("bw.stage.secure.response", envelope.to_json())
    await asyncio.sleep(0.2)
    assert replies.queue.empty()
    async with running_stages(example, nats_client, only=["secure"]):
        done = await replies.next()
    assert done.timings[-1].stage == "secure.response"


async def test_forwarders_skip_an_optional_stage_with_no_live_replica(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    async with running_stages(example, nats_client, only=["stamp", "hello-handler"]) as hosts:
        assert await hosts["stamp"][0].forwarder.ready(10.0) == ["secure"], "it knows secure has no replica"
        await send(nats_client, new_envelope(example, "_INBOX.test.skip"))
        done = await replies.next()

        async def stored() -> int:
            return int((await broker.jetstream(nats_client).stream_info("BW_EVENTS")).state.messages)

        # Events leave in batches, off the request path: the reply can come before the skip's event is stored.
        await eventually(stored)
        events = await stored()
    assert done.response is not None and done.response.status == 200
    assert [t.stage for t in done.timings] == ["stamp.request", "hello-handler.request"]
    (error,) = done.errors
    assert error.stage == "secure.response" and error.kind == "unavailable" and error.skipped
    assert events == 1, "the skip is recorded on the event stream"


def test_ack_wait_is_short_and_long_hooks_are_covered_by_heartbeats() -> None:
    assert ack_wait_for(0.1) == 1.0  # a killed replica's message moves on within a second
    assert ack_wait_for(0.5) == 1.5
    assert ack_wait_for(60.0) == 2.0  # hooks longer than this send in-progress heartbeats


@pytest.mark.usefixtures("allow_fault")
async def test_a_hook_longer_than_the_ack_deadline_is_not_redelivered_while_it_works(
    tmp_path: Path, nats_client: Client, replies: Replies
) -> None:
    loaded = blueprints.load(
        write_blueprint(
            tmp_path,
            """name: long
plugins:
  slow: {type: fault, timeout_ms: 4000, config: {mode: delay, delay_ms: 3000, header: null}}
endpoints:
  e: {path: /x, plugins: [slow], handler: {type: mock, config: {body: ok}}}
""",
        )
    )
    envelope = Envelope(
        route="e", method="GET", path="/x", deadline=time.time() + 10,
        reply_to="_INBOX.test.long", itinerary=loaded.itinerary("e"),
    )  # fmt: skip
    async with running_stages(loaded, nats_client, replicas=2) as hosts:
        assert hosts["slow"][0].ack_wait == 2.0 < 3.0, "the hook outlasts the ack deadline"
        await send(nats_client, envelope)
        done = await replies.next(timeout=8)
        # A redelivery would have reached the other replica after 2 s and still be running (or done).
        inflight = sum(consumer.inflight for host in hosts["slow"] for consumer in host.consumers)
        await asyncio.sleep(2.5)
        processed = sum(host.processed for host in hosts["slow"])
    assert done.response is not None and done.response.status == 200
    assert [t.attempt for t in done.timings if t.stage == "slow.request"] == [1]
    assert inflight == 0 and processed == 1, "in-progress heartbeats kept the message from a second replica"


class CancelsDuringHealthCheck(Passthrough):
    """Cancels the task taking the snapshot while its health check finishes: what ``Heartbeat.stop`` does."""

    name = "cancels-during-health-check"
    target: asyncio.Task[object] | None = None

    async def health_check(self) -> Health:
        assert self.target is not None
        self.target.cancel()
        return Health()


async def test_a_snapshot_cancelled_as_its_health_check_returns_stays_cancelled(nats_client: Client) -> None:
    # 3.11's asyncio.wait_for returns the inner result when cancelled at that moment; the heartbeat loop then
    # never ended and StageHost.stop waited for it forever (a 120 s hang of the long-hook test).
    instance = ResolvedInstance("c", PluginInstance(type=CancelsDuringHealthCheck.name), CancelsDuringHealthCheck,
                                EmptyConfig())  # fmt: skip
    host = StageHost(instance, nats_client)
    task: asyncio.Task[object] = asyncio.create_task(host.snapshot())
    CancelsDuringHealthCheck.target = task
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2.0)
    assert task.cancelled()


async def test_heartbeat_stop_ends_the_loop_even_if_a_beat_swallows_the_cancellation(nats_client: Client) -> None:
    swallowed = 0

    async def snapshot() -> ReplicaInfo:
        nonlocal swallowed
        try:
            await asyncio.sleep(HEARTBEAT_INTERVAL / 10)
        except asyncio.CancelledError:
            swallowed += 1  # what a plugin's health_check using 3.11's wait_for can do
        return ReplicaInfo(instance="h", replica="r", plugin="p", version="0", phases=[], pid=1, host="x",
                           started_at=0.0, sent_at=0.0, health="healthy")  # fmt: skip

    heartbeat = Heartbeat(broker.jetstream(nats_client), snapshot)
    await heartbeat.start()
    await asyncio.sleep(HEARTBEAT_INTERVAL * 1.05)  # inside the second beat's snapshot
    await asyncio.wait_for(heartbeat.stop(), 5.0)
    assert swallowed >= 1


@pytest.mark.usefixtures("allow_fault")  # the stage that raises is the `fault` plugin
async def test_lines_logged_while_a_stage_works_carry_the_request_id(
    tmp_path: Path, nats_client: Client, replies: Replies
) -> None:
    loaded = blueprints.load(
        write_blueprint(
            tmp_path,
            """name: ids
plugins:
  broken: {type: fault, config: {mode: raise, header: null}}
endpoints:
  e: {path: /x, plugins: [broken], handler: {type: mock, config: {body: ok}}}
""",
        )
    )
    envelope = Envelope(
        route="e", method="GET", path="/x", deadline=time.time() + 5, request_id="req-77",
        reply_to="_INBOX.test.ids", itinerary=loaded.itinerary("e"),
    )  # fmt: skip
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with running_stages(loaded, nats_client, only=["broken"]) as hosts:
            await hosts["broken"][0].forwarder.ready(10.0)  # knows the handler is absent: answers at once
            await send(nats_client, envelope)
            await replies.next()
    (raised,) = [entry for entry in logs if entry["event"] == "plugin hook raised"]
    assert raised["request_id"] == "req-77", "bound by the stage host, not passed by the executor"


async def test_a_redelivery_after_a_lost_ack_is_acknowledged_without_running_the_plugin_again(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    """What a stage sees when the node leading its consumer dies after the hand-off, before the ack landed."""
    from nats.js.api import ConsumerConfig

    from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_subject
    from backworks.pipeline.settlement import ACK

    settings = {name: instance.spec.breaker for name, instance in example.instances.items()}
    host = StageHost(example.instances["stamp"], nats_client, breaker_settings=settings)
    js = broker.jetstream(nats_client)
    async with running_stages(example, nats_client, only=["hello-handler", "secure"]):
        await host.forwarder.start()
        try:
            await eventually(lambda: host.forwarder.liveness.count("hello-handler") > 0)
            subject = stage_subject("stamp", Phase.REQUEST)
            pull = await js.pull_subscribe(
                subject, durable="test-lost-ack", stream=PIPELINE_STREAM, config=ConsumerConfig(ack_wait=1.0)
            )
            await send(nats_client, new_envelope(example, "_INBOX.test.lost-ack"))
            (first,) = await pull.fetch(1, timeout=10)
            assert await host.decide(Phase.REQUEST, first) is ACK  # handed on; the ack is "lost": never sent
            await eventually(lambda: len(replies.seen) == 1)
            (again,) = await pull.fetch(1, timeout=10)  # redelivered once ack_wait (1 s) passed
            assert again.metadata.num_delivered == 2
            assert await host.decide(Phase.REQUEST, again) is ACK
            await again.ack()
            await asyncio.sleep(0.5)  # room for a second reply to show up
        finally:
            await host.forwarder.stop()
    assert host.processed == 1, "the plugin ran once"
    assert len(replies.seen) == 1


async def test_a_replica_resuming_with_an_expired_copy_another_replica_finished_buries_nothing(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    """A replica SIGSTOPped with a redelivered message resumes after the deadline: its copy is no dead letter."""
    from nats.js.api import ConsumerConfig

    from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_subject
    from backworks.pipeline.deadletters import letters
    from backworks.pipeline.settlement import ACK

    settings = {name: instance.spec.breaker for name, instance in example.instances.items()}
    frozen, live = (StageHost(example.instances["stamp"], nats_client, breaker_settings=settings) for _ in range(2))
    js = broker.jetstream(nats_client)
    async with running_stages(example, nats_client, only=["hello-handler", "secure"]):
        await live.forwarder.start()
        try:
            await eventually(lambda: live.forwarder.liveness.count("hello-handler") > 0)
            pull = await js.pull_subscribe(
                stage_subject("stamp", Phase.REQUEST), durable="test-resume", stream=PIPELINE_STREAM,
                config=ConsumerConfig(ack_wait=1.0),
            )  # fmt: skip
            envelope = new_envelope(example, "_INBOX.test.resume")
            envelope.deadline = time.time() + 3.5
            await send(nats_client, envelope)
            await pull.fetch(1, timeout=10)  # taken by a replica that died
            (held,) = await pull.fetch(1, timeout=10)  # redelivered to the replica about to be stopped
            (third,) = await pull.fetch(1, timeout=10)  # and to a live one, which finishes it in time
            assert await live.decide(Phase.REQUEST, third) is ACK
            await third.ack()
            done = await replies.next()
            assert done.response is not None and done.response.status == 200
            await asyncio.sleep(max(0.0, envelope.remaining()) + 0.1)
            assert held.metadata.num_delivered == 2
            assert await frozen.decide(Phase.REQUEST, held) is ACK  # resumed past the deadline
        finally:
            await live.forwarder.stop()
    assert [letter async for _, letter in letters(js)] == [], "its request was answered: no dead letter"
    assert len(replies.seen) == 1, "and no failure sent after its answer"


async def test_a_second_copy_of_a_hand_off_is_not_run_again_by_the_replica_that_handed_it_on(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    """A hand-off stored twice (its retry crossed a broker crash that lost de-duplication state) runs once."""
    from nats.js.api import ConsumerConfig

    from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_subject
    from backworks.pipeline.settlement import ACK

    settings = {name: instance.spec.breaker for name, instance in example.instances.items()}
    host = StageHost(example.instances["stamp"], nats_client, breaker_settings=settings)
    js = broker.jetstream(nats_client)
    async with running_stages(example, nats_client, only=["hello-handler", "secure"]):
        await host.forwarder.start()
        try:
            await eventually(lambda: host.forwarder.liveness.count("hello-handler") > 0)
            subject = stage_subject("stamp", Phase.REQUEST)
            pull = await js.pull_subscribe(
                subject, durable="test-copy", stream=PIPELINE_STREAM, config=ConsumerConfig(ack_wait=5.0)
            )
            envelope = new_envelope(example, "_INBOX.test.copy")
            for _ in range(2):  # two stream messages, no Nats-Msg-Id: what a lost de-duplication leaves
                await js.publish(subject, envelope.to_json())
            first, second = await pull.fetch(2, timeout=10)
            assert second.metadata.num_delivered == 1
            for copy in (first, second):
                assert await host.decide(Phase.REQUEST, copy) is ACK
                await copy.ack()
            await replies.next()
            await asyncio.sleep(0.5)  # room for a second reply to show up
        finally:
            await host.forwarder.stop()
    assert host.processed == 1, "the plugin ran once"
    assert len(replies.seen) == 1
