"""The python handler through the real pipeline: nats-server, in-process stage hosts and gateway."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
import structlog
from nats.aio.client import Client
from structlog.testing import capture_logs

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from tests.serving import serving
from tests.stages import running_stages

APP = """
import asyncio
import threading
import time

RELEASE = threading.Event()
STARTED = []


def startup():
    STARTED.append(True)


def shutdown():
    RELEASE.set()


def get_note(request):
    return {"id": int(request.path_params["id"]), "started": STARTED == [True]}


async def create(request):
    return 201, {"title": request.json()["title"]}, {"location": "/notes/1"}


def boom(request):
    raise RuntimeError("secret connection string postgres://u:p@db")


def hang_sync(request):
    RELEASE.wait(30)
    return {}


async def hang_async(request):
    await asyncio.sleep(30)
"""

BLUEPRINT = """\
name: pyapp
endpoints:
  note:
    path: /notes/{id:int}
    handler: {type: python, config: {function: "notes_app:get_note"}}
  create:
    path: /notes
    methods: [POST]
    handler: {type: python, config: {function: "notes_app:create"}}
  boom:
    path: /boom
    handler: {type: python, config: {function: "notes_app:boom"}}
  hang-sync:
    path: /hang-sync
    handler: {type: python, timeout_ms: 300, config: {function: "notes_app:hang_sync"}}
  hang-async:
    path: /hang-async
    handler: {type: python, timeout_ms: 300, config: {function: "notes_app:hang_async"}}
"""


@pytest.fixture
def loaded(tmp_path: Path) -> blueprints.LoadedBlueprint:
    (tmp_path / "notes_app.py").write_text(dedent(APP))
    (tmp_path / "blueprint.yaml").write_text(BLUEPRINT)
    return blueprints.load(tmp_path / "blueprint.yaml")


async def test_python_handlers_answer_fail_and_time_out_through_the_pipeline(
    loaded: blueprints.LoadedBlueprint, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    async with running_stages(loaded, nats_client), serving(loaded, nats_server) as (http, _):
        note = await http.get("/notes/7")
        created = await http.post("/notes", json={"title": "hello"})
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            failed = await http.get("/boom", headers={"x-request-id": "req-boom"})
        slow_sync = await http.get("/hang-sync")
        slow_async = await http.get("/hang-async")

    assert note.status_code == 200 and note.json() == {"id": 7, "started": True}
    assert created.status_code == 201 and created.json() == {"title": "hello"}
    assert created.headers["location"] == "/notes/1"

    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["stage"] == "boom-handler.request"
    assert "postgres" not in failed.text and "RuntimeError" not in failed.text
    raised = [entry for entry in logs if entry["event"] == "handler function raised"]
    assert [entry["request_id"] for entry in raised] == ["req-boom"]

    for response, stage in ((slow_sync, "hang-sync-handler.request"), (slow_async, "hang-async-handler.request")):
        assert response.status_code == 504, response.text
        assert response.json()["stage"] == stage
        assert response.json()["cause"] == "timeout"
