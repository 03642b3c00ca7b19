"""Backpressure per stage in health and metrics: the gateway (as its own identity) polls each stage's durable.

The stage's replica is stopped after creating its durable, so what is published to its subject waits: pending, then
taken by a reader that does not acknowledge (ack pending), then delivered again (redelivered), each with the age of
the oldest message still waiting.
"""

from __future__ import annotations

import time

import pytest
from nats.aio.client import Client

from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_durable, stage_subject
from backworks.gateway import backpressure
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.gateway.test_metrics import samples
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

WAITING = 5
STAGE = "stamp.request"


async def test_pending_ack_pending_redeliveries_and_oldest_age_per_stage(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backpressure, "POLL_INTERVAL_S", 0.1)
    js = broker.jetstream(nats_client)
    async with running_stages(example, nats_client, only=["stamp"]):
        pass  # its durable exists from now on; no replica reads it
    subject = stage_subject("stamp", Phase.REQUEST)
    for number in range(WAITING):
        await js.publish(subject, f"waiting {number}".encode())
    published = time.time()
    async with gateway(example) as (http, state):
        assert state.backpressure is not None

        async def stage() -> dict[str, float | int | None]:
            found = (await http.get("/_backworks/health")).json()["stages"][STAGE]["backpressure"]
            assert found is not None, state.backpressure.errors if state.backpressure else None
            return dict(found)

        await eventually(lambda: state.backpressure is not None and STAGE in state.backpressure.loads)
        waiting = await stage()
        assert waiting["pending"] == WAITING and waiting["ack_pending"] == 0
        age = waiting["oldest_pending_age_s"]
        assert isinstance(age, float) and 0 <= age <= time.time() - published + 1.0

        # A reader takes them all and never acknowledges them: they are ack pending, then delivered again.
        reader = await js.pull_subscribe_bind(stage_durable("stamp", Phase.REQUEST), PIPELINE_STREAM)
        taken = await reader.fetch(WAITING, timeout=5)
        assert len(taken) == WAITING

        async def moved() -> bool:
            now = await stage()
            return now["pending"] == 0 and now["ack_pending"] == WAITING

        await eventually(moved, timeout=10)
        again = await reader.fetch(2, timeout=10)  # after the consumer's ack deadline (at most 2 s)
        assert {m.metadata.num_delivered for m in again} == {2}

        async def redelivered() -> bool:
            return (await stage())["redelivered"] >= 2  # type: ignore[operator]  # an int, from the poll

        await eventually(redelivered, timeout=10)
        found = samples((await http.get("/_backworks/metrics")).text)
        labels = (("stage", STAGE),)
        assert found[("backworks_stage_pending", labels)] == 0
        assert found[("backworks_stage_ack_pending", labels)] == WAITING
        assert found[("backworks_stage_redelivered", labels)] >= 2
        assert found[("backworks_stage_oldest_pending_seconds", labels)] > 0
        assert state.backpressure.errors.get(STAGE) is None
        # secure's durable does not exist (no replica ever ran): no figure, rather than a 0 that would be a lie.
        assert ("backworks_stage_pending", (("stage", "secure.response"),)) not in found
        assert "secure.response" in state.backpressure.errors
