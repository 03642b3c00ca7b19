"""Runs one plugin inside the real stage host, against a real nats-server, from a test.

``StageRunner`` starts a nats-server (``backworks.local.embedded.EmbeddedNats``, on a free loopback port) unless
given a URL, declares Backworks' streams and buckets, starts a ``backworks.pipeline.stagehost.StageHost`` for the
plugin, and sends envelopes through JetStream exactly as the gateway does. What comes back is the envelope
the stage host forwarded: a failure is recorded in ``envelope.errors``, timings in ``envelope.timings``.

    async with StageRunner(ApiKey, {"keys": ["k1"]}) as stage:
        envelope = await stage.request(request(headers={"x-api-key": "k1"}))
        assert_continued(envelope)

Given ``nats_url``, streams and buckets are declared on that server: use a server dedicated to tests.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from backworks.contracts.blueprint import PluginInstance
from backworks.contracts.envelope import Envelope
from backworks.contracts.names import Phase, gateway_inbox, reply_subject
from backworks.contracts.registry import ReplicaInfo
from backworks.local import census
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import broker
from backworks.pipeline.awaiting import AwaitableMap
from backworks.pipeline.blueprints import ResolvedInstance
from backworks.pipeline.contract import verify
from backworks.pipeline.forwarder import Forwarder
from backworks.pipeline.plugin import Plugin
from backworks.pipeline.stagehost import StageHost
from backworks.sdk import factories

DEFAULT_SEND_TIMEOUT = 5.0


class StageRunner:
    """One replica of one plugin, served by a real stage host on a real broker, for the life of ``async with``."""

    def __init__(
        self,
        plugin: type[Plugin[Any]],
        config: BaseModel | Mapping[str, Any] | None = None,
        *,
        instance: str = "test",
        nats_url: str | None = None,
        critical: bool | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        self.cls = verify(plugin, f"stage runner ({plugin.__module__})")
        model = factories.config(plugin, config)
        spec = PluginInstance(type=self.cls.name, critical=critical, timeout_ms=timeout_ms)
        self.instance = ResolvedInstance(instance, spec, self.cls, model)
        self.nats_url = nats_url
        self.server: EmbeddedNats | None = None
        self.client: Client | None = None
        self.host: StageHost | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._inbox_id = f"sdk{uuid.uuid4().hex[:12]}"
        self._waiting: AwaitableMap[str, bytes] = AwaitableMap()
        self._forwarder: Forwarder | None = None
        self._subscription: Subscription | None = None

    @property
    def url(self) -> str:
        """The broker the stage host is attached to."""
        if self.nats_url:
            return self.nats_url
        if self.server is None:
            raise RuntimeError("StageRunner is not running: use `async with StageRunner(...)`")
        return self.server.url

    async def __aenter__(self) -> StageRunner:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        if not self.nats_url:
            self._workdir = tempfile.TemporaryDirectory(prefix="backworks-sdk-")
            work = Path(self._workdir.name)
            self.server = EmbeddedNats(work / "jetstream", log_file=work / "nats-server.log")
            await asyncio.to_thread(self.server.start)
        self.client = await broker.connect([self.url], name=f"backworks-sdk-{self.instance.name}")
        await broker.declare(broker.jetstream(self.client), storage="memory")
        self._subscription = await self.client.subscribe(gateway_inbox(self._inbox_id), cb=self._on_reply)
        # Ungated: the envelope goes straight to this stage, as the gateway would send it (msg id and all).
        self._forwarder = Forwarder(self.client, broker.jetstream(self.client), {}, self._inbox_id, gated=False)
        await self._forwarder.start()
        self.host = StageHost(self.instance, self.client)
        await self.host.start()

    async def _stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
            self.host = None
        if self._forwarder is not None:
            await self._forwarder.stop()
            self._forwarder = None
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        self._waiting.cancel_all()
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self.server = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    async def _on_reply(self, msg: Msg) -> None:
        self._waiting.resolve(msg.subject.rsplit(".", 1)[-1], msg.data)

    async def send(self, envelope: Envelope, phase: Phase, timeout: float = DEFAULT_SEND_TIMEOUT) -> Envelope:
        """Publish ``envelope`` to this plugin's ``phase`` stage and return what the stage host forwarded."""
        if self._forwarder is None:
            raise RuntimeError("StageRunner is not running: use `async with StageRunner(...)`")
        if phase not in self.cls.phases:
            served = ", ".join(p.value for p in self.cls.phases) or "none"
            raise AssertionError(f"plugin {self.cls.name!r} does not serve the {phase.value} phase (serves: {served})")
        outgoing = Envelope.from_json(envelope.to_json())
        outgoing.id, outgoing.correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
        outgoing.itinerary = [self.instance.stage(phase)]
        outgoing.cursor = 0
        outgoing.reply_to = reply_subject(self._inbox_id, outgoing.correlation_id)
        outgoing.deadline = time.time() + timeout
        future = self._waiting.expect(outgoing.correlation_id, timeout)
        try:
            await self._forwarder.forward(outgoing)
            raw = await future
        except TimeoutError:
            raise AssertionError(
                f"no envelope back from stage {self.instance.name}.{phase.value} within {timeout:.1f} s"
            ) from None
        finally:
            self._waiting.forget(outgoing.correlation_id)
        return Envelope.from_json(raw)

    async def request(self, envelope: Envelope | None = None, **request: Any) -> Envelope:
        """Send through the request phase (default envelope: ``factories.request(**request)``)."""
        return await self.send(envelope or factories.request(**request), Phase.REQUEST)

    async def response(self, envelope: Envelope | None = None, **response: Any) -> Envelope:
        """Send through the response phase (default envelope: ``factories.response(**response)``)."""
        return await self.send(envelope or factories.response(**response), Phase.RESPONSE)

    async def replicas(self) -> list[ReplicaInfo]:
        """The live replicas of this instance, as published to the ``bw_registry`` bucket."""
        if self.client is None:
            raise RuntimeError("StageRunner is not running: use `async with StageRunner(...)`")
        everything = census.live(await census.read(broker.jetstream(self.client)))
        return [info for info in everything if info.instance == self.instance.name]
