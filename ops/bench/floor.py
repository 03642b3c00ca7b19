"""The raw floor: the same hops as the pipeline through bare nats-py, no framework, no validation.

``python -m ops.bench.floor stage ...`` is one hop: a durable JetStream pull consumer kept topped up with
a standing pull request; for each message it JetStream-publishes a payload of the next hop's size with a
``Nats-Msg-Id`` (or, at the last hop, core-publishes to the reply subject carried in a header), then acks.
``python -m ops.bench.floor gateway ...`` is the same uvicorn the gateway runs, serving a bare ASGI
callable that publishes the first hop and awaits the reply on its inbox. Payloads are opaque bytes of
the sizes measured on the real pipeline, so the broker moves exactly as many bytes per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from backworks.contracts.names import MSG_ID_HEADER
from backworks.local.ports import LOOPBACK
from backworks.pipeline import nats_auth
from backworks.pipeline.permissions import ADMIN
from ops.bench.server import serve

STREAM = "BENCH_FLOOR"
SUBJECTS = "bench.floor.>"
ID_HEADER = "Bw-Id"
REPLY_HEADER = "Bw-Reply"
PUBLISH_TIMEOUT = 1.0
REPLY_TIMEOUT = 10.0
PULL_EXPIRES_NS = 30 * 1_000_000_000
ACK_WAIT = 5.0
SINGLE_PREFIX = "/_single"
"""Requests under this path take the one-hop chain; everything else takes the full chain."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def subject(chain: str, index: int) -> str:
    return f"bench.floor.{chain}.{index}"


def durable(chain: str, index: int) -> str:
    return f"floor-{chain}-{index}"


class Hop:
    """One floor stage: pull, publish onward, ack."""

    def __init__(self, client: Client, chain: str, index: int, out_size: int, last: bool, max_inflight: int) -> None:
        self.client = client
        self.js: JetStreamContext = client.jetstream(timeout=PUBLISH_TIMEOUT)
        self.chain = chain
        self.index = index
        self.payload = b"x" * out_size
        self.last = last
        self.next_subject = subject(chain, index + 1)
        self.max_inflight = max_inflight
        self.pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable(chain, index)}"
        self.inbox = client.new_inbox()
        self.requested = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        name = durable(self.chain, self.index)
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=subject(self.chain, self.index),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT,
            max_ack_pending=max(self.max_inflight * 4, 256),
            max_waiting=512,
        )
        await self.js.add_consumer(STREAM, config)
        await self.client.subscribe(self.inbox, cb=self.on_message, pending_msgs_limit=-1)
        await self.top_up()

    async def top_up(self) -> None:
        wanted = self.max_inflight - self.requested - len(self.tasks)
        if wanted <= 0:
            return
        self.requested += wanted
        request = json.dumps({"batch": wanted, "expires": PULL_EXPIRES_NS}).encode()
        await self.client.publish(self.pull_subject, request, reply=self.inbox)

    async def on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if "Status" in headers:  # the pull request expired or was cut short: ask again
            self.requested = 0
            await self.top_up()
            return
        self.requested -= 1
        self.tasks.add(asyncio.create_task(self.forward(msg, headers[ID_HEADER], headers[REPLY_HEADER])))
        if self.requested + len(self.tasks) <= self.max_inflight // 2:
            await self.top_up()

    async def forward(self, msg: Msg, request_id: str, reply: str) -> None:
        try:
            if self.last:
                await self.client.publish(reply, self.payload)
            else:
                headers = {MSG_ID_HEADER: f"{request_id}:{self.index + 1}", ID_HEADER: request_id, REPLY_HEADER: reply}
                await self.js.publish(self.next_subject, self.payload, timeout=PUBLISH_TIMEOUT, headers=headers)
            await msg.ack()
        finally:
            # Leave the set before counting: several tasks often finish in one loop iteration.
            self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]  # the running task
            if self.requested + len(self.tasks) <= self.max_inflight // 2:
                await self.top_up()


def admin_auth(servers: list[str] | str) -> dict[str, Any]:
    """The floor's connect options: the admin key of the state directory (the floor measures the bare hops, not
    permission checks; the broker refuses anonymous clients)."""
    listed = [servers] if isinstance(servers, str) else servers
    return nats_auth.resolve(ADMIN, listed).options()


async def run_stage(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = await nats.connect(args.nats, name=f"floor-{args.chain}-{args.index}", **admin_auth(args.nats))
    hop = Hop(client, args.chain, args.index, args.out_size, args.last, args.max_inflight)
    await hop.start()
    await stop.wait()
    await client.drain()


class FloorGateway:
    """A bare ASGI callable: publish the first hop, await the reply on a core-NATS inbox, answer."""

    def __init__(self, servers: list[str], sizes: dict[str, int], response_size: int) -> None:
        self.servers = servers
        self.payloads = {chain: b"x" * size for chain, size in sizes.items()}
        self.body = b"x" * response_size
        self.headers = [(b"content-type", b"application/json"), (b"content-length", str(response_size).encode())]
        self.prefix = f"_INBOX.floor.{uuid.uuid4().hex[:12]}."
        self.waiting: dict[str, asyncio.Future[bytes]] = {}
        self.client: Client | None = None
        self.js: JetStreamContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = await nats.connect(
                    self.servers, name="floor-gateway", pending_size=64 * 1024 * 1024, **admin_auth(self.servers)
                )
                self.js = self.client.jetstream(timeout=PUBLISH_TIMEOUT)
                await self.client.subscribe(self.prefix + "*", cb=self.on_reply, pending_msgs_limit=-1)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def on_reply(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg.data)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        assert self.js is not None
        chain = "single" if scope["path"].startswith(SINGLE_PREFIX) else "full"
        request_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        try:
            headers = {MSG_ID_HEADER: f"{request_id}:0", ID_HEADER: request_id, REPLY_HEADER: self.prefix + request_id}
            await self.js.publish(subject(chain, 0), self.payloads[chain], timeout=PUBLISH_TIMEOUT, headers=headers)
            await asyncio.wait_for(future, REPLY_TIMEOUT)
        finally:
            self.waiting.pop(request_id, None)
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    stage = commands.add_parser("stage", help="one hop")
    stage.add_argument("--nats", required=True)
    stage.add_argument("--chain", required=True)
    stage.add_argument("--index", type=int, required=True)
    stage.add_argument("--out-size", type=int, required=True, help="bytes published onward")
    stage.add_argument("--last", action="store_true", help="reply to the gateway instead of publishing onward")
    stage.add_argument("--max-inflight", type=int, default=64)
    gateway = commands.add_parser("gateway", help="the bare ASGI edge under uvicorn")
    gateway.add_argument("--nats", required=True)
    gateway.add_argument("--host", default=LOOPBACK)
    gateway.add_argument("--port", type=int, required=True)
    gateway.add_argument("--sizes", required=True, help='JSON {"full": bytes, "single": bytes} of the first hop')
    gateway.add_argument("--response-size", type=int, required=True)
    args = parser.parse_args()
    if args.command == "stage":
        uvloop.run(run_stage(args))
    else:
        app = FloorGateway([args.nats], json.loads(args.sizes), args.response_size)
        serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
