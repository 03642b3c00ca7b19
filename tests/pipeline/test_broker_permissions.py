"""The broker enforces each service's identity: the attacks of issue 9, against a real nats-server.

Every service here connects as the identity a deployment gives it (keys from the test's state directory); an
admin client watches what reaches the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError
from structlog.testing import capture_logs

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.contracts.names import REGISTRY_BUCKET, REPLY_RESEND_SUBJECT, gateway_inbox, reply_subject
from backworks.contracts.registry import ReplicaInfo
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.keyring import KEYRING_DIR
from backworks.pipeline.permissions import GATEWAY, TAP, identities, stage_identity
from backworks.pipeline.replycache import RecentReplies
from backworks.pipeline.stagehost import StageHost
from tests.files import write_blueprint
from tests.serving import serving
from tests.waiting import eventually

QUIET = 0.5
"""Seconds an admin subscriber listens for something that must not arrive (the refusal is synchronous)."""
BROKEN = """name: guarded
plugins:
  broken: {type: fault, config: {mode: raise, header: null}, breaker: {failure_threshold: 2, reset_timeout_ms: 60000}}
endpoints:
  hi: {path: /hi, plugins: [broken], handler: {type: mock, config: {status: 200, body: ok}}}
"""


class Connection:
    """A client connected as one identity, and every asynchronous error the server sent it."""

    def __init__(self, client: Client, errors: list[str]) -> None:
        self.client = client
        self.errors = errors

    def refused(self) -> bool:
        return any("permissions violation" in error.lower() for error in self.errors)


@contextlib.asynccontextmanager
async def connected_as(server: EmbeddedNats, identity: str) -> AsyncIterator[Connection]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    client = await nats.connect(
        servers=[server.url],
        name=f"test-{identity}",
        error_cb=on_error,
        connect_timeout=2,
        **server.auth(identity).options(),
    )
    try:
        yield Connection(client, errors)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def stages_as_themselves(
    loaded: LoadedBlueprint, server: EmbeddedNats
) -> AsyncIterator[dict[str, tuple[StageHost, Connection]]]:
    """One in-process replica per instance, each on its own connection as its own identity."""
    server.admit(identities(loaded).values())
    settings = {name: item.spec.breaker for name, item in loaded.instances.items()}
    async with contextlib.AsyncExitStack() as stack:
        hosts: dict[str, tuple[StageHost, Connection]] = {}
        for name, instance in loaded.instances.items():
            connection = await stack.enter_async_context(connected_as(server, stage_identity(name)))
            host = StageHost(instance, connection.client, breaker_settings=settings)
            await host.start()
            stack.push_async_callback(host.stop)
            hosts[name] = (host, connection)
        yield hosts


async def nothing_arrives(admin: Client, subject: str, act: object) -> list[Msg]:
    """Subscribe as admin to ``subject``, run ``act`` (an awaitable), and return what arrived within ``QUIET``."""
    seen: list[Msg] = []

    async def collect(msg: Msg) -> None:
        seen.append(msg)

    sub = await admin.subscribe(subject, cb=collect)
    await admin.flush()
    assert asyncio.iscoroutine(act)
    await act
    await asyncio.sleep(QUIET)
    await sub.unsubscribe()
    return seen


def forged_envelope(reply_to: str) -> Envelope:
    envelope = Envelope(route="hello", method="GET", path="/hello/x", reply_to=reply_to, deadline=time.time() + 5)
    envelope.response = HttpResponse(status=200, headers=[("set-cookie", "session=ATTACKER")], body=b"forged")
    return envelope


async def test_an_anonymous_client_is_refused(nats_server: EmbeddedNats) -> None:
    async def quiet(exc: Exception) -> None:
        """The refusal is asserted below."""

    client = Client()
    try:
        with pytest.raises(Exception, match="Authorization Violation"):
            await client.connect(
                servers=[nats_server.url], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2,
                error_cb=quiet,
            )  # fmt: skip
    finally:
        await client.close()


async def test_credentials_are_owner_only_and_the_server_config_holds_no_secret(
    nats_server: EmbeddedNats, example: LoadedBlueprint
) -> None:
    nats_server.admit(identities(example).values())
    keys = nats_server.keyring.root
    assert keys.name == KEYRING_DIR
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    files = [path for path in keys.iterdir() if path.is_file()]
    assert {path.name for path in files} >= {"admin.nk", "gateway.nk", "stage-stamp.nk", "tap.nk", "identities.json"}
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files), [oct(p.stat().st_mode) for p in files]
    config = nats_server.config_file.read_text()
    assert stat.S_IMODE(nats_server.config_file.stat().st_mode) == 0o600
    seeds = [path.read_text().strip() for path in files if path.suffix == ".nk"]
    assert seeds and all(seed.startswith("SU") and seed not in config for seed in seeds)
    assert "no_auth_user" not in config


async def test_each_service_does_its_job_as_its_own_identity(
    nats_server: EmbeddedNats, nats_client: Client, allow_fault: None, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BROKEN))
    with capture_logs() as logs:
        hosts = await serve_and_call(loaded, nats_server, nats_client)
    for name, (_, connection) in hosts.items():
        assert connection.errors == [], name
    gateway_errors = [entry for entry in logs if entry["event"] == "nats error"]
    assert gateway_errors == []


async def serve_and_call(
    loaded: LoadedBlueprint, nats_server: EmbeddedNats, nats_client: Client
) -> dict[str, tuple[StageHost, Connection]]:
    async with stages_as_themselves(loaded, nats_server) as hosts, serving(loaded, nats_server) as (http, state):
        for _ in range(3):
            answered = await http.get("/hi")
            assert answered.status_code == 200 and answered.text == "ok"
        # The failing optional stage was skipped, counted, and its breaker (written by its own identity) opened.
        assert state.breakers is not None
        breakers = state.breakers
        await eventually(lambda: breakers.state("broken").value == "open")
        kv = await broker.jetstream(nats_client).key_value("bw_breakers")
        assert json.loads((await kv.get("broken.state")).value or b"")["state"] == "open"
        assert state.liveness is not None and state.liveness.count("hi-handler") == 1
    return hosts


async def test_a_stage_cannot_publish_to_a_stage_before_it_nor_read_the_pipeline(
    nats_server: EmbeddedNats, nats_client: Client, example: LoadedBlueprint
) -> None:
    nats_server.admit(identities(example).values())
    async with connected_as(nats_server, stage_identity("hello-handler")) as handler:
        envelope = forged_envelope("_INBOX.test.x").to_json()
        act = handler.client.publish("bw.stage.stamp.request", envelope)
        assert await nothing_arrives(nats_client, "bw.stage.stamp.request", act) == []
        await eventually(handler.refused)
        handler.errors.clear()
        await handler.client.subscribe("bw.stage.>")
        await handler.client.subscribe("_INBOX.bw.>")
        await eventually(lambda: len([e for e in handler.errors if "subscription" in e.lower()]) == 2)
    pipeline = await broker.jetstream(nats_client).stream_info("BW_PIPELINE")
    assert pipeline.state.messages == 0, "nothing forged reached the stream"


async def test_a_stage_cannot_take_another_stages_messages_nor_change_streams(
    nats_server: EmbeddedNats, nats_client: Client, example: LoadedBlueprint
) -> None:
    nats_server.admit(identities(example).values())
    async with connected_as(nats_server, stage_identity("stamp")) as stamp:
        js = stamp.client.jetstream(timeout=1)
        with pytest.raises(NatsTimeout):  # refused: the server drops the request, no answer comes
            await js.delete_stream("BW_PIPELINE")
        await stamp.client.publish("$JS.API.CONSUMER.MSG.NEXT.BW_PIPELINE.bw-hello-handler-request", b"{}")
        await eventually(lambda: sum("permissions violation" in e.lower() for e in stamp.errors) >= 2)
    assert (await broker.jetstream(nats_client).stream_info("BW_PIPELINE")).config.name == "BW_PIPELINE"


async def test_a_forged_reply_never_reaches_the_gateway(
    nats_server: EmbeddedNats, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with serving(example, nats_server) as (_, state), connected_as(nats_server, TAP) as tap:
        assert state.inbox is not None
        inbox = state.inbox
        subject = reply_subject(state.gateway_id, "c0ffee")
        waiting = inbox.expect("c0ffee", 5.0)
        act = tap.client.publish(subject, forged_envelope(subject).to_json())
        assert await nothing_arrives(nats_client, "_INBOX.bw.>", act) == []
        await eventually(tap.refused)
        assert not waiting.done(), "the gateway got nothing"
        assert inbox.dropped == 0
        inbox.forget("c0ffee")
        waiting.cancel()


async def test_only_a_gateway_asks_for_missed_replies_and_a_stage_hears_it_as_itself(
    nats_server: EmbeddedNats, example: LoadedBlueprint
) -> None:
    nats_server.admit(identities(example).values())
    async with (
        connected_as(nats_server, stage_identity("hello-handler")) as handler,
        connected_as(nats_server, GATEWAY) as gateway,
    ):
        replies = RecentReplies(handler.client)
        await replies.start()
        seen: list[Msg] = []

        async def collect(msg: Msg) -> None:
            seen.append(msg)

        await gateway.client.subscribe(gateway_inbox("g1"), cb=collect)
        await gateway.client.flush()
        await handler.client.flush()
        replies.keep(reply_subject("g1", "c"), b"kept")
        await handler.client.publish(REPLY_RESEND_SUBJECT, b"g1")  # a stage may not ask for another's replies
        await eventually(handler.refused)
        await asyncio.sleep(QUIET)
        assert seen == []
        await gateway.client.publish(REPLY_RESEND_SUBJECT, b"g1")
        await eventually(lambda: len(seen) == 1)
        assert seen[0].data == b"kept" and not gateway.refused()
        await replies.stop()


async def test_a_forged_breaker_record_or_heartbeat_for_another_instance_is_refused(
    nats_server: EmbeddedNats, nats_client: Client, example: LoadedBlueprint
) -> None:
    nats_server.admit(identities(example).values())
    admin = broker.jetstream(nats_client)
    async with connected_as(nats_server, stage_identity("stamp")) as stamp:
        js = stamp.client.jetstream(timeout=1)
        opened = json.dumps({"v": 1, "state": "open", "generation": 9, "opened_at": time.time(), "reset_at": 2e9})
        with pytest.raises(NatsTimeout):  # refused: the put is never acknowledged
            await js.publish("$KV.bw_breakers.hello-handler.state", opened.encode())
        fake = ReplicaInfo(
            instance="hello-handler", replica="fake", plugin="mock", version="1", phases=[], pid=1, host="x",
            started_at=time.time(), sent_at=time.time(), health="healthy",
        )  # fmt: skip
        with pytest.raises(NatsTimeout):  # refused as above
            await js.publish(f"$KV.{REGISTRY_BUCKET}.hello-handler.fake", fake.model_dump_json().encode())
        await eventually(lambda: sum("permissions violation" in e.lower() for e in stamp.errors) >= 2)
        # Its own keys it may write; a heartbeat there that names another instance is still not believed.
        await js.publish(f"$KV.{REGISTRY_BUCKET}.stamp.fake", fake.model_dump_json().encode())
    breakers = await admin.key_value("bw_breakers")
    with pytest.raises(KeyNotFoundError):
        await breakers.get("hello-handler.state")
    registry = await admin.key_value(REGISTRY_BUCKET)
    with pytest.raises(KeyNotFoundError):
        await registry.get("hello-handler.fake")
    from backworks.pipeline.liveness import LivenessView

    view = LivenessView(admin)
    await view.start()
    await eventually(lambda: view.ready.is_set())
    assert view.count("hello-handler") == 0 and view.count("stamp") == 0
    await view.stop()


async def test_the_tap_reads_the_event_stream_and_nothing_else(
    nats_server: EmbeddedNats, nats_client: Client, example: LoadedBlueprint
) -> None:
    await broker.jetstream(nats_client).publish("bw.evt.stage.error", b'{"kind": "error"}')
    async with connected_as(nats_server, TAP) as tap:
        js = tap.client.jetstream(timeout=2)
        events = await js.pull_subscribe("bw.evt.>", durable="audit", stream="BW_EVENTS")
        (event,) = await events.fetch(1, timeout=5)
        assert event.data == b'{"kind": "error"}'
        await event.ack()
        assert tap.errors == []
        with pytest.raises(NatsTimeout):  # refused: the request never reaches JetStream
            await js.pull_subscribe("bw.stage.>", durable="peek", stream="BW_PIPELINE")
        await tap.client.subscribe("bw.stage.>")
        await eventually(lambda: sum("permissions violation" in e.lower() for e in tap.errors) >= 2)
