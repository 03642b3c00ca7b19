"""Shadow replay in-process: which stage the candidate replaces, recorded requests run with their credentials
restored, and a candidate configured by another blueprint file or a ``bw_config`` revision."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from nats.aio.client import Client

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import CONFIG_BUCKET, Phase
from backworks.contracts.recordings import RecordingSwitch
from backworks.gateway.recording import Capture, recording_of
from backworks.pipeline import blueprints, broker, credentials, sealing
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.shadow import ReplayError, ShadowRunner, plan, recorded, replay_envelope, stage_ms
from backworks.shadow_commands import revision
from tests.files import write_blueprint

KEY = "shadow-key-0123456789abcdef"
BLUEPRINT = """name: shadow
plugins:
  stamp: {type: response-headers, config: {set: {x-version: "1"}}}
  stamp-v2: {type: response-headers, config: {set: {x-version: "2"}}}
  extra: {type: response-headers, config: {set: {x-extra: "1"}}}
  echo-v2: {type: mock, config: {body: "v2 {header.x-api-key}"}}
endpoints:
  notes:
    path: /notes
    plugins: [stamp]
    handler: {type: mock, config: {body: "v1 {header.x-api-key}"}}
  both:
    path: /both
    plugins: [stamp, extra]
    handler: {type: mock, config: {body: ok}}
"""


@pytest.fixture(autouse=True)
def _forget_keys() -> Iterator[None]:
    yield
    sealing.forget_keys()


@pytest.fixture
def live(tmp_path: Path) -> LoadedBlueprint:
    return blueprints.load(write_blueprint(tmp_path, BLUEPRINT))


def test_the_candidate_replaces_the_one_stage_of_its_plugin_type(live: LoadedBlueprint) -> None:
    shadow = plan(live, live, "notes", "stamp-v2")
    assert shadow.replacing == "stamp"
    assert [(s.instance, s.phase) for s in shadow.itinerary] == [
        ("notes-handler", Phase.REQUEST),
        ("stamp-v2", Phase.RESPONSE),
    ]
    assert plan(live, live, "notes", "echo-v2").replacing == "notes-handler"  # the handler, a mock like it
    assert plan(live, live, "notes", "stamp").replacing == "stamp"  # itself: a config from another revision


def test_an_ambiguous_or_impossible_replacement_is_refused(live: LoadedBlueprint) -> None:
    with pytest.raises(ReplayError, match="--replacing"):
        plan(live, live, "both", "stamp-v2")  # stamp or extra?
    assert plan(live, live, "both", "stamp-v2", replacing="extra").replacing == "extra"
    with pytest.raises(ReplayError, match="does not run"):
        plan(live, live, "notes", "stamp-v2", replacing="extra")
    with pytest.raises(ReplayError, match="no plugin instance"):
        plan(live, live, "notes", "nope")
    with pytest.raises(ReplayError, match="no request phase"):
        plan(live, live, "notes", "stamp-v2", replacing="notes-handler")


def recording_with_key(body: bytes = b"v1 " + KEY.encode()) -> Capture:
    envelope = Envelope(
        route="notes", method="GET", path="/notes", request_id="r1", headers=[("x-api-key", KEY), ("accept", "*/*")]
    )
    now = time.time()
    switch = RecordingSwitch(session="s1", endpoint="notes", sample=1.0, started_at=now, until=now + 60)
    timing = b"notes-handler.request;dur=0.200, stamp.response;dur=0.100, total;dur=3.0"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"x-version", b"1"), (b"server-timing", timing)]
    return Capture(switch, envelope, 200, headers, body, 3.0, now)


async def test_a_recorded_request_runs_in_process_with_its_credentials_restored(live: LoadedBlueprint) -> None:
    credentials.declare(headers=["x-api-key"])  # as the api-key plugin would declare it
    item = recording_of(recording_with_key())
    assert item.sealed is not None and KEY not in item.model_dump_json()
    shadow = plan(live, live, "notes", "echo-v2")
    runner = ShadowRunner(shadow)
    await runner.start()
    try:
        new = await runner.run(replay_envelope(item, shadow.itinerary, shadow.timeout_ms))
    finally:
        await runner.stop()
    assert new.status == 200 and new.body == b"v2 " + KEY.encode()  # the key came back from the seal
    assert ("x-version", "1") in new.headers  # the rest of the itinerary ran as live
    assert new.stage_ms is not None and new.stage_ms >= 0
    old = recorded(item, shadow.replacing)
    assert old.stage_ms == 0.2 and old.total_ms == 3.0


def test_server_timing_gives_the_replaced_stage_time() -> None:
    timing = "keys.request;dur=0.5, stamp.request;dur=0.25, stamp.response;dur=0.125, total;dur=9"
    assert stage_ms(timing, "stamp") == 0.375
    assert stage_ms(timing, "nope") is None


def test_the_candidate_config_can_come_from_another_blueprint_file(live: LoadedBlueprint, tmp_path: Path) -> None:
    changed = BLUEPRINT.replace('set: {x-version: "1"}', 'set: {x-version: "3"}')
    source = blueprints.load(write_blueprint(tmp_path, changed, "next.yaml"))
    shadow = plan(live, source, "notes", "stamp")
    assert shadow.instances["stamp"].config.model_dump()["set"] == {"x-version": "3"}


async def test_the_candidate_config_can_come_from_a_bw_config_revision(
    live: LoadedBlueprint, nats_client: Client
) -> None:
    js = broker.jetstream(nats_client)
    kv = await js.key_value(CONFIG_BUCKET)
    await kv.put("rev.2", BLUEPRINT.replace('set: {x-version: "1"}', 'set: {x-version: "4"}').encode())
    source = await revision(js, live, 2)
    assert plan(live, source, "notes", "stamp").instances["stamp"].config.model_dump()["set"] == {"x-version": "4"}
    # A revision as `backworks apply` stores it: the parsed blueprint and the file it came from.
    data = yaml.safe_load(BLUEPRINT.replace('set: {x-version: "1"}', 'set: {x-version: "5"}'))
    stored = {"v": 1, "number": 3, "created_at": 0.0, "source": str(live.path), "blueprint": data}
    await kv.put("rev.3", json.dumps(stored).encode())
    source = await revision(js, live, 3)
    assert plan(live, source, "notes", "stamp").instances["stamp"].config.model_dump()["set"] == {"x-version": "5"}
    with pytest.raises(ReplayError, match="no revision 4"):
        await revision(js, live, 4)
