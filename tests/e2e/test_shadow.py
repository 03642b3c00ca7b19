"""Shadow replay under ``backworks up``: 500 requests recorded at 100 %, replayed against a changed instance.

The report must say exactly what changed (the ``x-version`` header of every request, nothing else), the recorded
credentials must rest sealed in ``BW_RECORD`` and be restored for the replay (the endpoint needs an API key), and
the replay must leave the live path untouched: no message in the pipeline stream, no delivery to a stage consumer,
no request event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backworks.contracts.names import EVENTS_STREAM, PIPELINE_STREAM, RECORD_STREAM, Phase, stage_durable
from backworks.contracts.recordings import Recording
from backworks.pipeline import broker
from backworks.pipeline.permissions import ADMIN
from backworks.pipeline.secrets import MASK
from backworks.recordings import recordings
from tests.e2e.deployment import Deployment, deployed
from tests.e2e.processes import BACKWORKS
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

KEY = "shadow-key-0123456789abcdef"
REQUESTS = 500
CONCURRENCY = 16
STAGES = [("keys", Phase.REQUEST), ("notes-handler", Phase.REQUEST), ("stamp", Phase.RESPONSE)]
BLUEPRINT = f"""
name: shadowed
plugins:
  keys:
    type: api-key
    config: {{keys: [{{consumer: alice, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}}}]}}
  stamp: {{type: response-headers, config: {{set: {{x-version: "1"}}}}}}
  stamp-v2: {{type: response-headers, config: {{set: {{x-version: "2"}}}}}}
endpoints:
  notes:
    path: /notes/{{id}}
    methods: [GET, POST]
    plugins: [keys, stamp]
    handler: {{type: mock, config: {{body: {{ok: true}}}}}}
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("shadow"), BLUEPRINT) as running:
        yield running


async def send(base: str) -> list[httpx.Response]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"x-api-key": KEY}) as http:

        async def one(number: int) -> httpx.Response:
            async with limit:
                if number % 2:
                    return await http.post(f"/notes/{number}", json={"n": number}, params={"q": str(number)})
                return await http.get(f"/notes/{number}")

        return await asyncio.gather(*(one(number) for number in range(REQUESTS)))


async def live_path(deployment: Deployment) -> dict[str, Any]:
    """What the live path has seen: pipeline messages, deliveries per stage consumer, request events."""
    client = await broker.connect([deployment.nats_url()], name="test-shadow", auth=deployment.auth(ADMIN))
    try:
        js = client.jetstream()
        pipeline = await js.stream_info(PIPELINE_STREAM)
        events = await js.stream_info(EVENTS_STREAM, subjects_filter="bw.evt.request.>")
        delivered = {}
        for instance, phase in STAGES:
            info = await js.consumer_info(PIPELINE_STREAM, stage_durable(instance, phase))
            delivered[instance] = (info.delivered.stream_seq, info.num_pending, info.num_ack_pending)
        return {
            "pipeline_last_seq": pipeline.state.last_seq,
            "request_events": sum((events.state.subjects or {}).values()),
            "delivered": delivered,
        }
    finally:
        await client.drain()


async def stored(deployment: Deployment, session: str) -> list[tuple[Recording, bytes]]:
    client = await broker.connect([deployment.nats_url()], name="test-shadow", auth=deployment.auth(ADMIN))
    try:
        js = client.jetstream()
        found = [(item, item.model_dump_json().encode()) async for _, item in recordings(js, "notes", session)]
        raw = await js.get_msg(RECORD_STREAM, (await js.stream_info(RECORD_STREAM)).state.first_seq)
        assert KEY.encode() not in (raw.data or b"")
        return found
    finally:
        await client.drain()


def test_record_500_requests_and_replay_them_against_a_changed_instance(deployment: Deployment) -> None:
    recorder = subprocess.Popen(
        [BACKWORKS, "record", str(deployment.blueprint), "--endpoint", "notes", "--sample", "100%", "--for", "5m",
         "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=deployment.env, cwd=deployment.folder,
    )  # fmt: skip
    try:

        def recording() -> bool:
            health = httpx.get(f"{deployment.base}/_backworks/health", timeout=5).json()
            return "notes" in (health.get("recording") or {}).get("recording", {})

        asyncio.run(eventually(recording, timeout=30, interval=0.2))
        responses = asyncio.run(send(deployment.base))
        assert [r.status_code for r in responses] == [200] * REQUESTS
        assert {r.headers["x-version"] for r in responses} == {"1"}
        health = httpx.get(f"{deployment.base}/_backworks/health", timeout=5).json()["recording"]
        assert health["sampled"] == REQUESTS and health["lost"] == 0
    finally:
        recorder.send_signal(signal.SIGINT)
        out, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, err
    summary = json.loads(out)
    assert summary["recorded"] == REQUESTS, summary

    kept = asyncio.run(stored(deployment, summary["session"]))
    assert len(kept) == REQUESTS
    for item, data in kept:  # the API key rests sealed, never in clear
        assert item.envelope.header("x-api-key") == MASK
        assert item.sealed is not None and not item.credentials_dropped
        assert KEY.encode() not in data
        assert item.response.status == 200

    before = asyncio.run(live_path(deployment))
    result = deployment.cli(
        "replay", str(deployment.blueprint), "--against", "stamp-v2", "--endpoint", "notes",
        "--session", summary["session"], "--format", "json", "--fail-on-diff",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # --fail-on-diff: every request differs
    report = json.loads(result.stdout)
    assert report["replacing"] == "stamp"
    assert report["counts"] == {"replayed": REQUESTS, "same": 0, "differs": REQUESTS, "error": 0}
    assert report["differences"] == {"header x-version": REQUESTS}  # statuses and bodies the same
    assert all(r["headers"] == {"x-version": {"recorded": ["1"], "replayed": ["2"]}} for r in report["requests"])
    assert set(report["latency_ms"]) == {"recorded_total", "replayed_total", "recorded_stage", "replayed_stage"}
    after = asyncio.run(live_path(deployment))
    assert after == before  # nothing published, delivered or evented on the live path

    same = deployment.cli(
        "replay", str(deployment.blueprint), "--against", "stamp", "--endpoint", "notes", "--limit", "50",
        "--format", "json", "--fail-on-diff",
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads(same.stdout)["counts"] == {"replayed": 50, "same": 50, "differs": 0, "error": 0}
