"""Where a service's broker credentials come from, and an external broker with a user and password."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from backworks.contracts.blueprint import NatsSettings
from backworks.local.embedded import EmbeddedNats, find_binary
from backworks.local.ports import LOOPBACK, accepts, free_port
from backworks.local.processes import terminate
from backworks.pipeline import broker, nats_auth
from backworks.pipeline.errors import BrokerUnavailable
from backworks.pipeline.permissions import GATEWAY
from tests.waiting import eventually

PASSWORD = "s3cret-pw"  # the test broker's password


def test_the_embedded_brokers_keyring_gives_each_identity_its_own_seed_and_inbox(nats_server: EmbeddedNats) -> None:
    nats_server.keyring.admit([])
    admin = nats_auth.resolve("admin", [nats_server.url])
    options = admin.options()
    assert options["inbox_prefix"] == "_BW_INBOX.admin"
    assert options["nkeys_seed_str"] == nats_server.keyring.seed("admin")
    assert "SU" not in admin.describe() and "keyring" in admin.describe()


def test_a_broker_this_state_directory_did_not_start_gets_no_key(nats_server: EmbeddedNats) -> None:
    found = nats_auth.resolve("admin", ["nats://elsewhere:4222"])
    assert "nkeys_seed_str" not in found.options()


def test_environment_files_win_over_the_blueprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = tmp_path / "gateway.nk"
    seed.write_text("SUxxxx\n")
    settings = NatsSettings(url="nats://h:4222", user="u", password=SecretStr(PASSWORD))
    from_blueprint = nats_auth.resolve(GATEWAY, ["nats://h:4222"], settings).options()
    assert from_blueprint["user"] == "u" and from_blueprint["password"] == PASSWORD
    monkeypatch.setenv(nats_auth.NKEY_ENV, str(seed))
    from_environment = nats_auth.resolve(GATEWAY, ["nats://h:4222"], settings)
    assert from_environment.options()["nkeys_seed"] == str(seed)
    assert "user" not in from_environment.options()
    assert from_environment.options()["inbox_prefix"] == "_BW_INBOX.gateway"


def test_a_token_file_and_a_secret_never_show_in_descriptions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    monkeypatch.setenv(nats_auth.TOKEN_FILE_ENV, str(token))
    found = nats_auth.resolve(GATEWAY, ["nats://h:4222"])
    assert found.options()["token"] == "tok-123"
    assert "tok-123" not in found.describe() and "tok-123" not in repr(found)
    settings = NatsSettings(url="nats://h:4222", token=SecretStr("tok-456"))
    assert "tok-456" not in settings.model_dump_json()


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[str]:
    """A plain nats-server (not ours) that wants a user and password, as an external broker might."""
    port = free_port()
    process = subprocess.Popen(
        [str(find_binary()), "-a", LOOPBACK, "-p", str(port), "--user", "svc", "--pass", PASSWORD, "-js",
         "--store_dir", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"nats://{LOOPBACK}:{port}"
    finally:
        terminate([process], 5.0)


async def test_an_external_broker_with_a_user_and_password(password_broker: str) -> None:
    host, port = password_broker.removeprefix("nats://").split(":")
    await eventually(lambda: accepts(host, int(port)))
    settings = NatsSettings(url=password_broker, user="svc", password=SecretStr(PASSWORD))
    client = await broker.connect([password_broker], "test", identity=GATEWAY, settings=settings)
    assert client.is_connected
    await client.close()
    wrong = NatsSettings(url=password_broker, user="svc", password=SecretStr("nope-nope"))
    with pytest.raises(BrokerUnavailable, match="identity gateway") as refused:
        await broker.connect([password_broker], "test", identity=GATEWAY, settings=wrong)
    assert "nope-nope" not in str(refused.value)
