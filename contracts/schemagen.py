"""Generates the committed JSON Schemas of the contracts: ``python -m backworks.contracts.schemagen``.

A test fails when a model changes and its schema is not regenerated, so plugins written in other
languages against ``contracts/schemas/`` never drift from what the services send.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from backworks.contracts.blueprint import Blueprint
from backworks.contracts.breakers import ProbeRecord, StateRecord, WindowRecord
from backworks.contracts.envelope import Envelope
from backworks.contracts.events import (
    AlertEvent,
    BreakerTransition,
    DeadLetter,
    RequestReceived,
    RequestResponded,
    SecurityEvent,
    StageCompleted,
    StageEvent,
)
from backworks.contracts.recordings import Recording, RecordingSwitch
from backworks.contracts.registry import ReplicaInfo
from backworks.contracts.revision import CurrentPointer, ProbeAnswer, Revision
from backworks.contracts.splits import RolledBack

SCHEMA_DIR = Path(__file__).parent / "schemas"
MODELS: dict[str, type[BaseModel]] = {
    "envelope.v1.json": Envelope,
    "blueprint.v1.json": Blueprint,
    "replica-info.v1.json": ReplicaInfo,
    "stage-event.v1.json": StageEvent,
    "dead-letter.v1.json": DeadLetter,
    "security-event.v1.json": SecurityEvent,
    "request-received.v1.json": RequestReceived,
    "stage-completed.v1.json": StageCompleted,
    "request-responded.v1.json": RequestResponded,
    "alert-event.v1.json": AlertEvent,
    "breaker-transition.v1.json": BreakerTransition,
    "split-rollback.v1.json": RolledBack,
    "breaker-state.v1.json": StateRecord,
    "breaker-window.v1.json": WindowRecord,
    "breaker-probe.v1.json": ProbeRecord,
    "recording.v1.json": Recording,
    "recording-switch.v1.json": RecordingSwitch,
    "revision.v1.json": Revision,
    "revision-current.v1.json": CurrentPointer,
    "revision-probe-answer.v1.json": ProbeAnswer,
}


def generate() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema(mode="serialization") for name, model in MODELS.items()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = SCHEMA_DIR / name
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
