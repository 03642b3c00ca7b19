from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.contracts.names import Phase, stage_subject
from backworks.gateway.replies import ReplyInbox
from backworks.pipeline import blueprints
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages


def reply(correlation_id: str, body: bytes = b"ok") -> Envelope:
    return Envelope(
        correlation_id=correlation_id,
        route="r",
        method="GET",
        path="/",
        response=HttpResponse(status=200, body=body),
    )


async def settle(client: Client) -> None:
    await client.flush()
    await asyncio.sleep(0.1)


async def test_late_and_duplicate_replies_are_dropped(nats_client: Client) -> None:
    inbox = ReplyInbox(nats_client, "gw1")
    await inbox.start()
    future = inbox.expect("c1", 5.0)
    await nats_client.publish(inbox.subject("c1"), reply("c1", b"first").to_json())
    await nats_client.publish(inbox.subject("c1"), reply("c1", b"duplicate").to_json())
    await nats_client.publish(inbox.subject("unknown"), b"late")
    received = await asyncio.wait_for(future, 2)
    assert received.response is not None and received.response.body == b"first"
    await settle(nats_client)
    assert inbox.dropped == 2
    assert inbox.invalid == 0
    assert len(inbox.waiting) == 0
    await inbox.stop()


async def test_garbage_for_a_waiting_request_is_counted_and_dropped_and_the_real_reply_still_arrives(
    nats_client: Client,
) -> None:
    inbox = ReplyInbox(nats_client, "gw1")
    await inbox.start()
    future = inbox.expect("c1", 5.0)
    subject = inbox.subject("c1")
    for garbage in (b"not json", b"{}", b'{"v": 1, "route": 3}', reply("c2", b"someone else's").to_json()):
        await nats_client.publish(subject, garbage)
    await settle(nats_client)
    assert not future.done(), "garbage resolved nothing: the request waits on"
    assert (inbox.invalid, inbox.dropped) == (4, 0)
    await nats_client.publish(subject, reply("c1", b"real").to_json())
    received = await asyncio.wait_for(future, 2)
    assert received.response is not None and received.response.body == b"real"
    assert inbox.report() == {"waiting": 0, "dropped_late_or_duplicate": 0, "dropped_invalid": 4}
    await inbox.stop()


async def test_replies_for_another_gateway_are_not_received(nats_client: Client) -> None:
    mine, other = ReplyInbox(nats_client, "gw-a"), ReplyInbox(nats_client, "gw-b")
    await mine.start()
    future = mine.expect("c1", 5.0)
    await nats_client.publish(other.subject("c1"), reply("c1").to_json())
    await settle(nats_client)
    assert not future.done()
    await mine.stop()


SLOW_BLUEPRINT = """name: inbox
plugins:
  slow: {type: fault, config: {mode: delay, delay_ms: 1500, header: null}}
endpoints:
  e: {path: /x, plugins: [slow], handler: {type: mock, config: {body: real}}}
"""


@pytest.mark.usefixtures("allow_fault")  # the `fault` plugin holds the request while the garbage arrives
async def test_garbage_on_the_gateways_inbox_is_never_a_500(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, SLOW_BLUEPRINT))
    seen: asyncio.Queue[Envelope] = asyncio.Queue()

    async def spy(msg: Msg) -> None:  # a copy of what the gateway hands the first stage: its reply subject
        await seen.put(Envelope.from_json(msg.data))

    await nats_client.subscribe(stage_subject("slow", Phase.REQUEST), cb=spy)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, _):
        request = asyncio.create_task(http.get("/x", timeout=10))
        sent = await asyncio.wait_for(seen.get(), 5)
        forged = sent.model_copy(update={"correlation_id": "not-the-waiting-one"})
        for garbage in (b"\x00garbage", b"[]", forged.to_json()):
            await nats_client.publish(sent.reply_to, garbage)
        await nats_client.flush()
        response = await request
        health = (await http.get("/_backworks/health")).json()
    assert response.status_code == 200, response.text
    assert response.content == b"real"
    assert health["inbox"]["dropped_invalid"] == 3
