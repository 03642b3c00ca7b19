"""Recording at the gateway: deterministic sampling, credentials sealed as in dead letters, and (against a real
nats-server) a switch that the gateway follows, recordings read back by admin and by nobody else."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client
from starlette.responses import Response

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import RECORD_STREAM
from backworks.contracts.recordings import RecordingSwitch
from backworks.gateway.recording import RECORD_BODY_BYTES, Capture, Recorder, recording_of, sampled
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker, credentials, sealing
from backworks.pipeline.deadletters import open_seal
from backworks.pipeline.permissions import GATEWAY, identities
from backworks.pipeline.secrets import MASK
from backworks.recordings import new_switch, recordings, switch_off, switch_on
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

KEY = "record-key-0123456789abcdef"
BLUEPRINT = f"""name: recorded
plugins:
  keys:
    type: api-key
    config: {{keys: [{{consumer: alice, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}}}]}}
endpoints:
  notes:
    path: /notes
    methods: [GET, POST]
    plugins: [keys]
    handler: {{type: mock, config: {{body: {{ok: true}}, headers: {{set-cookie: "session=s3cr3t-cookie-value"}}}}}}
  other:
    path: /other
    handler: {{type: mock, config: {{body: other}}}}
"""
SAMPLES = 20_000


@pytest.fixture(autouse=True)
def _forget_keys() -> Iterator[None]:
    yield
    sealing.forget_keys()


def switch(sample: float = 1.0, until: float | None = None) -> RecordingSwitch:
    now = time.time()
    return RecordingSwitch(session="s1", endpoint="notes", sample=sample, started_at=now, until=until or now + 60)


def request(headers: list[tuple[str, str]] | None = None, request_id: str = "r1") -> Envelope:
    return Envelope(route="notes", method="GET", path="/notes", request_id=request_id, headers=headers or [])


def test_sampling_is_deterministic_per_request_and_takes_the_configured_share() -> None:
    ids = [uuid.uuid4().hex for _ in range(SAMPLES)]
    first = [sampled("s1", rid, 0.1) for rid in ids]
    assert first == [sampled("s1", rid, 0.1) for rid in ids]  # the same request, the same answer
    assert abs(sum(first) / SAMPLES - 0.1) < 0.015  # 7 standard deviations of a binomial(20000, 0.1)
    other = [sampled("s2", rid, 0.1) for rid in ids]
    assert other != first  # another session samples other requests
    assert all(sampled("s1", rid, 1.0) for rid in ids[:100])
    half = [rid for rid in ids if sampled("s1", rid, 0.5)]
    assert set(rid for rid in ids if sampled("s1", rid, 0.1)) <= set(half)  # a larger share keeps the smaller's


def test_capture_takes_only_switched_on_unexpired_sampled_requests() -> None:
    # No broker: capture touches only the switches and the queue (the publisher asks the client for an inbox name).
    recorder = Recorder(_NoClient(), None)  # type: ignore[arg-type]  # stands in for nats-py's Client and JetStream
    response = Response(b"ok")
    recorder.capture("notes", request(), response, 1.0)
    assert recorder.sampled == 0  # not switched on
    recorder.switches["notes"] = switch(until=time.time() - 1)
    recorder.capture("notes", request(), response, 1.0)
    assert recorder.sampled == 0  # expired: it stops by itself
    recorder.switches["notes"] = switch()
    recorder.capture("other", request(), response, 1.0)
    recorder.capture("notes", None, response, 1.0)  # refused before an envelope was built
    recorder.capture("notes", request(), response, 1.0)
    assert recorder.sampled == 1 and len(recorder._queue) == 1


class _NoClient:
    def new_inbox(self) -> str:
        return "_INBOX.test"


def capture(envelope: Envelope, headers: list[tuple[bytes, bytes]], body: bytes = b"{}") -> Capture:
    return Capture(switch(), envelope, 200, headers, body, 3.5, time.time())


def test_a_recording_keeps_credentials_only_sealed() -> None:
    envelope = request([("x-request-id", "r1"), ("authorization", f"Bearer {KEY}")])
    recording = recording_of(capture(envelope, [(b"set-cookie", b"session=s3cr3t-cookie-value")]))
    data = recording.model_dump_json()
    assert KEY not in data and "s3cr3t-cookie-value" not in data
    assert recording.envelope.header("authorization") == MASK
    assert recording.response.headers == [("set-cookie", MASK)]
    assert recording.sealed is not None and not recording.credentials_dropped
    kept = open_seal(recording.sealed)
    assert ("authorization", f"Bearer {KEY}") in kept.headers
    assert kept.response_headers == [("set-cookie", "session=s3cr3t-cookie-value")]


def test_without_a_key_credentials_are_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(sealing.KEY_FILE_ENV, str(tmp_path / "missing.key"))
    recording = recording_of(capture(request([("authorization", f"Bearer {KEY}")]), []))
    assert recording.sealed is None and recording.credentials_dropped
    assert KEY not in recording.model_dump_json()


def test_a_request_without_credentials_is_kept_as_it_was_and_long_bodies_are_cut() -> None:
    body = b"x" * (RECORD_BODY_BYTES + 10)
    recording = recording_of(capture(request([("accept", "text/plain")]), [(b"content-type", b"text/plain")], body))
    assert recording.sealed is None and not recording.credentials_dropped
    assert recording.envelope.headers == [("accept", "text/plain")]
    response = recording.response
    assert response.body_truncated and len(response.body) == RECORD_BODY_BYTES
    assert response.body_bytes == len(body) and response.body_sha256 == hashlib.sha256(body).hexdigest()


def test_only_admin_reads_recordings_and_only_the_gateway_publishes_them(tmp_path: Path) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    found = identities(loaded)
    for name, identity in found.items():
        publish, subscribe = identity.permissions.publish, identity.permissions.subscribe
        reads = [s for s in publish if RECORD_STREAM in s and "INFO" not in s]
        if name == "admin":
            continue
        assert not reads, (name, reads)  # no consumer, no message get on BW_RECORD
        assert ("bw.rec.>" in publish) == (name == GATEWAY), name
        assert not any(s.startswith("bw.rec") for s in subscribe)


async def test_the_gateway_records_while_switched_on_and_admin_reads_it_back(
    gateway: Gateway, nats_server: EmbeddedNats, nats_client: Client, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    js = broker.jetstream(nats_client)

    async with running_stages(loaded, nats_client), gateway(loaded) as (http, state):
        assert state.recorder is not None
        on = new_switch("notes", 1.0, 60)
        await switch_on(js, on)
        await eventually(lambda: "notes" in state.recorder.switches if state.recorder else False)
        for number in range(5):
            answer = await http.post("/notes", headers={"x-api-key": KEY}, params={"n": str(number)}, json={"n": 1})
            assert answer.status_code == 200
        await http.get("/other")  # another endpoint: not recorded

        async def all_stored() -> bool:
            return len([item async for _, item in recordings(js, "notes", on.session)]) == 5

        await eventually(all_stored, timeout=10)
        await switch_off(js, "notes")
        await eventually(lambda: "notes" not in state.recorder.switches if state.recorder else False)
        await http.post("/notes", headers={"x-api-key": KEY}, json={})
        kept = [item async for _, item in recordings(js, "notes", on.session)]
        assert len(kept) == 5  # nothing after the switch went off
        assert state.recorder.report()["lost"] == 0

        # The gateway's own identity may publish recordings but cannot read them.
        client = await broker.connect([nats_server.url], name="gateway-reader", identity=GATEWAY)
        try:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):  # the request is refused
                await broker.jetstream(client, timeout=1).get_msg(RECORD_STREAM, 1)
        finally:
            await client.close()
    for item in kept:
        assert item.envelope.header("x-api-key") == MASK
        assert item.sealed is not None and KEY not in item.model_dump_json()
        assert item.response.status == 200
        assert ("set-cookie", MASK) in item.response.headers
        assert ("x-api-key", KEY) in open_seal(item.sealed).headers
    assert [item.envelope.query_param("n") for item in kept] == ["0", "1", "2", "3", "4"]
    credentials.forget_declared()
