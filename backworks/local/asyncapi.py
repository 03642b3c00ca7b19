"""The pipeline of a blueprint as an AsyncAPI 3 document, generated with FastStream.

FastStream is not on the hot path (a FastStream subscriber costs several times a raw nats-py callback
per message, see the benchmark); it serves where it is good: describing the services. Every stage
subject is a channel the stage's replicas receive on (a JetStream pull consumer on ``BW_PIPELINE``),
carrying the versioned envelope; the event, dead-letter and reply subjects are channels the services
send on. The document is built without connecting to NATS.
"""

from __future__ import annotations

import json
from typing import Any

from faststream.nats import JStream, NatsBroker, PullSub
from faststream.specification import AsyncAPI

from backworks.contracts.envelope import Envelope
from backworks.contracts.events import DeadLetter, StageEvent
from backworks.contracts.names import (
    DLQ_STREAM,
    EVENTS_STREAM,
    PIPELINE_STREAM,
    Phase,
    reply_subject,
    stage_durable,
    stage_subject,
)
from backworks.pipeline.blueprints import LoadedBlueprint

DOCUMENT_SERVER = "nats://localhost:4222"


async def _described(envelope: Envelope) -> None:
    """Documentation only: the stage host, not FastStream, consumes these subjects."""


def build(loaded: LoadedBlueprint, version: str) -> dict[str, Any]:
    """The AsyncAPI 3 document (as a dict) of every stage, event and reply subject of ``loaded``."""
    servers = loaded.model.nats.servers if not loaded.model.nats.embedded else [DOCUMENT_SERVER]
    broker = NatsBroker(servers, logger=None)
    pipeline = JStream(PIPELINE_STREAM, declare=False)
    for name, instance in loaded.instances.items():
        for phase in instance.cls.phases:
            label = f"{name}.{phase.value}"
            critical = "critical" if instance.critical else "optional"
            broker.subscriber(
                stage_subject(name, phase),
                stream=pipeline,
                durable=stage_durable(name, phase),
                pull_sub=PullSub(),
                title=label,
                description=(
                    f"{instance.cls.name} {instance.cls.version} ({instance.cls.category.value}, {critical}): "
                    f"{instance.cls.description} Replicas share the durable; limit {instance.timeout * 1000:.0f} ms."
                ),
            )(_described)
    broker.publisher(
        "bw.evt.stage.{kind}",
        stream=JStream(EVENTS_STREAM, declare=False),
        schema=StageEvent,
        title="events",
        description="A stage failed or was skipped (BW_EVENTS; audit and analytics tap it).",
    )
    broker.publisher(
        "bw.dlq.{instance}.{phase}",
        stream=JStream(DLQ_STREAM, declare=False),
        schema=DeadLetter,
        title="dead-letters",
        description="An envelope that exhausted its deliveries (`backworks dlq`).",
    )
    broker.publisher(
        reply_subject("{gateway}", "{correlation}"),
        schema=Envelope,
        title="replies",
        description="The finished envelope, sent by the last stage to the waiting gateway (core NATS).",
    )
    endpoints = ", ".join(f"{e.methods} {e.path}" for e in loaded.model.endpoints.values())
    spec = AsyncAPI(
        broker,
        title=loaded.model.name,
        version=version,
        description=loaded.model.description
        or f"Backworks pipeline for {endpoints}. Phases: " + ", ".join(p.value for p in Phase),
    )
    document: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return document
