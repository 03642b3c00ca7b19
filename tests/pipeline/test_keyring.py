"""The state directory's keyring: keys generated once, owner-only, and a running broker reloaded on a change."""

from __future__ import annotations

import stat
from pathlib import Path

from backworks.local.embedded import EmbeddedNats, wait_accepted
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.keyring import Keyring, public_key
from backworks.pipeline.permissions import identities, stage_identity


def test_keys_are_generated_once_and_kept(tmp_path: Path, example: LoadedBlueprint) -> None:
    keyring = Keyring(tmp_path / "keys")
    assert keyring.admit(identities(example).values())
    seed = keyring.seed("gateway")
    assert seed is not None and seed.startswith("SU")
    assert not keyring.admit(identities(example).values()), "nothing changed: nothing written, nobody reloaded"
    assert keyring.seed("gateway") == seed
    assert keyring.entries()["gateway"]["public_key"] == public_key(seed)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "keys").iterdir())


def test_up_replaces_the_identities_with_its_blueprints(tmp_path: Path, example: LoadedBlueprint) -> None:
    keyring = Keyring(tmp_path / "keys")
    keyring.admit(identities(example).values())
    keyring.admit([], replace=True)
    assert set(keyring.entries()) == {"admin", "tap"}
    assert public_key(keyring.seed("stage-stamp") or "") not in keyring.auth_file.read_text()


def test_another_process_admitting_identities_reloads_the_running_broker(
    nats_server: EmbeddedNats, example: LoadedBlueprint
) -> None:
    # What a hand-run `backworks gateway` does next to `backworks nats`: its own Keyring object, same directory.
    other = Keyring(nats_server.keyring.root)
    assert other.admit(identities(example).values())
    wait_accepted(nats_server.url, nats_server.auth(stage_identity("stamp")), 10.0)
