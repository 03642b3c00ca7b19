"""Dead letters keep a request's credentials only sealed: never in clear in ``BW_DLQ`` nor in ``dlq show``, and a
replay restores them where the dead-letter key is (and says clearly when it is not)."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from typer.testing import CliRunner

from backworks.cli import app
from backworks.contracts.envelope import Envelope
from backworks.contracts.events import DeadLetter
from backworks.contracts.names import DLQ_STREAM, PIPELINE_STREAM, stage_durable, stage_subject
from backworks.dlq_commands import _replay, shown
from backworks.local.state import state_dir
from backworks.pipeline import blueprints, broker, credentials, sealing, secrets
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.deadletters import DeadLetterWatch, dead_letter, letters
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.secrets import MASK
from tests.files import write_blueprint
from tests.replies import Replies
from tests.samples import LEAKY_CONFIG, LEAKY_SOURCE, QUERY_CREDENTIAL, REQUEST_CREDENTIALS, leaks, write_plugin_file
from tests.stages import running_stages

DEADLINE = 10.0
BLUEPRINT = f"""name: letters
plugin_dirs: [local]
plugins:
  leaky: {{type: leaky, config: {json.dumps(LEAKY_CONFIG)}}}
endpoints:
  e:
    path: /x
    plugins: [leaky]
    handler: {{type: mock, config: {{body: "{{header.authorization}}|{{header.x-api-key}}|{{query.api_key}}"}}}}
"""
ECHOED = f"{REQUEST_CREDENTIALS['authorization']}|{REQUEST_CREDENTIALS['x-api-key']}|{QUERY_CREDENTIAL}"
"""What the handler answers when the replayed request carries its original credentials."""
runner = CliRunner()


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    secrets.forget_all()
    credentials.forget_declared()
    sealing.forget_keys()


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedBlueprint:
    write_plugin_file(tmp_path, "leaky.py", LEAKY_SOURCE)
    return blueprints.load(write_blueprint(tmp_path, BLUEPRINT))


def request(loaded: LoadedBlueprint, request_id: str) -> Envelope:
    """A request with credentials in standard and declared headers and in a declared query parameter."""
    return Envelope(
        route="e", method="GET", path="/x", request_id=request_id, deadline=time.time() + DEADLINE,
        reply_to=f"_INBOX.test.{request_id}", itinerary=loaded.itinerary("e"),
        headers=[*REQUEST_CREDENTIALS.items(), ("x-mode", "pass")], query=[("api_key", QUERY_CREDENTIAL)],
    )  # fmt: skip


async def exhaust(js: JetStreamContext, client: Client, loaded: LoadedBlueprint, replies: Replies) -> int:
    """Send a request whose first stage takes it and dies every time until it is dead-lettered; its sequence."""
    first = loaded.itinerary("e")[0]
    durable = stage_durable(first.instance, first.phase)
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=2)
    poisoned = await js.pull_subscribe(stage_subject(first.instance, first.phase), durable, config=config)
    events = EventPublisher(client)
    await events.start()
    watch = DeadLetterWatch(client, js, events)
    await watch.start()
    await js.publish(stage_subject(first.instance, first.phase), request(loaded, "req-dead").to_json())
    for _ in range(2):
        await poisoned.fetch(1, timeout=2)
    waiting = asyncio.ensure_future(poisoned.fetch(1, timeout=2))  # a standing pull, as live replicas have
    failed = await replies.next()
    waiting.cancel()
    assert failed.errors[0].kind == "exhausted"
    await watch.stop()
    await events.stop()
    await poisoned.unsubscribe()
    await js.delete_consumer(PIPELINE_STREAM, durable)  # the stage host below declares its own
    ((seq, _),) = [item async for item in letters(js)]
    return seq


async def test_a_dead_letter_stores_credentials_only_sealed_shows_them_masked_and_replays_them(
    nats_client: Client, loaded: LoadedBlueprint, replies: Replies
) -> None:
    js = broker.jetstream(nats_client)
    seq = await exhaust(js, nats_client, loaded, replies)

    stored = (await js.get_msg(DLQ_STREAM, seq)).data or b""
    assert leaks(stored.decode()) == [], "BW_DLQ holds no credential in clear"
    letter = DeadLetter.model_validate_json(stored)
    assert letter.sealed and not letter.credentials_dropped
    assert ("authorization", MASK) in letter.envelope.headers and ("x-api-key", MASK) in letter.envelope.headers
    assert ("api_key", MASK) in letter.envelope.query and ("x-mode", "pass") in letter.envelope.headers
    key_file = state_dir() / sealing.KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    server = nats_client.connected_url
    assert server is not None
    shown_ = await asyncio.to_thread(runner.invoke, app, ["dlq", "show", str(seq), "--nats", server.geturl()])
    assert shown_.exit_code == 0, shown_.output
    assert leaks(shown_.output) == [] and MASK in shown_.output
    assert json.loads(shown_.stdout)["credentials"].startswith("sealed")

    async with running_stages(loaded, nats_client):
        done = await _replay([server.geturl()], {seq}, keep=True, timeout_ms=5000)
        assert [item.get("refused") for item in done] == [None]
        replayed = await replies.next()
    assert replayed.response is not None and replayed.response.body.decode() == ECHOED, "original credentials"


async def test_replay_without_the_key_refuses_clearly(
    nats_client: Client, loaded: LoadedBlueprint, replies: Replies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = broker.jetstream(nats_client)
    seq = await exhaust(js, nats_client, loaded, replies)
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key())
    monkeypatch.setenv(sealing.KEY_FILE_ENV, str(other))
    server = nats_client.connected_url
    assert server is not None

    refused = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", str(seq), "--nats", server.geturl()])
    assert refused.exit_code == 1
    said = " ".join(refused.stderr.split())  # the console may wrap long lines
    assert f"not replayed {seq}: its credentials are sealed and cannot be restored here: the dead-letter key" in said
    assert f"{other} does not open this seal: it was made with another key; set {sealing.KEY_FILE_ENV}" in said
    assert [item async for item in letters(js)] != [], "a refused letter stays"


async def test_a_letter_whose_credentials_were_not_kept_replays_without_them(
    nats_client: Client, loaded: LoadedBlueprint, replies: Replies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sealing.KEY_FILE_ENV, str(tmp_path / "missing.key"))
    js = broker.jetstream(nats_client)
    seq = await exhaust(js, nats_client, loaded, replies)
    server = nats_client.connected_url
    assert server is not None
    async with running_stages(loaded, nats_client):
        replay = ["dlq", "replay", str(seq), "--nats", server.geturl()]
        result = await asyncio.to_thread(runner.invoke, app, replay)
        replayed = await replies.next()
    assert result.exit_code == 0, result.output
    assert "without its credentials: they were not kept" in result.stdout
    assert replayed.response is not None and replayed.response.body.decode() == "||", "sent without credentials"


def test_without_a_key_the_credentials_are_not_kept_at_all(
    loaded: LoadedBlueprint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sealing.KEY_FILE_ENV, str(tmp_path / "missing.key"))
    letter = dead_letter(request(loaded, "req-nokey"), stage="leaky.request", subject="s", attempts=3, error="x")
    assert letter.credentials_dropped and letter.sealed is None
    assert leaks(letter.model_dump_json()) == []
    assert not (tmp_path / "missing.key").exists(), "a key named by the deployment is never made up"


def test_a_request_without_credentials_needs_no_key(loaded: LoadedBlueprint) -> None:
    plain = request(loaded, "req-plain")
    plain.headers, plain.query = [("accept", "*/*")], []
    letter = dead_letter(plain, stage="leaky.request", subject="s", attempts=3, error="x")
    assert letter.sealed is None and not letter.credentials_dropped and letter.envelope.headers == plain.headers
    assert not (state_dir() / sealing.KEY_FILE_NAME).exists()


def test_dlq_show_masks_a_letter_stored_in_clear_before_sealing(loaded: LoadedBlueprint) -> None:
    old = DeadLetter(stage="leaky.request", subject="s", attempts=3, error="x", envelope=request(loaded, "req-old"))
    assert leaks(json.dumps(shown(old))) == []
    assert shown(old)["credentials"] == "none sealed"
