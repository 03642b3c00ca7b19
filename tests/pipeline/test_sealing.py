"""The dead-letter key: made once per state directory by whichever process needs it first, private, or named."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from backworks.local.state import state_dir
from backworks.pipeline import sealing
from backworks.pipeline.sealing import DeadLetterKeyError

SEAL_IN_A_PROCESS = "import sys; from backworks.pipeline import sealing; print(sealing.seal(sys.argv[1].encode()))"


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    sealing.forget_keys()


def test_processes_racing_to_make_the_key_all_seal_with_the_one_that_won() -> None:
    racers = [
        subprocess.Popen([sys.executable, "-c", SEAL_IN_A_PROCESS, f"from {n}"], stdout=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    tokens = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert [sealing.unseal(token) for token in tokens] == [f"from {n}".encode() for n in range(4)]
    key_file = state_dir() / sealing.KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in state_dir().iterdir() if p.name.startswith(".")] == [], "no partial key left behind"


def test_a_named_key_file_is_used_and_never_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = tmp_path / "dlq-secret"
    monkeypatch.setenv(sealing.KEY_FILE_ENV, str(named))
    with pytest.raises(DeadLetterKeyError, match=f"no dead-letter key at {named}: set {sealing.KEY_FILE_ENV}"):
        sealing.seal(b"x")
    assert not named.exists()
    named.write_bytes(Fernet.generate_key())
    assert Fernet(named.read_bytes()).decrypt(sealing.seal(b"x").encode()) == b"x"
    assert not (state_dir() / sealing.KEY_FILE_NAME).exists()


def test_reading_never_makes_a_key_and_a_wrong_key_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    with pytest.raises(DeadLetterKeyError, match="no dead-letter key at"):
        sealing.unseal(token)
    assert not (state_dir() / sealing.KEY_FILE_NAME).exists()
    sealing.seal(b"y")  # makes the state directory's key, which is not the one that sealed ``token``
    with pytest.raises(DeadLetterKeyError, match="does not open this seal: it was made with another key"):
        sealing.unseal(token)
    broken = tmp_path / "broken.key"
    broken.write_text("not a key")
    monkeypatch.setenv(sealing.KEY_FILE_ENV, str(broken))
    with pytest.raises(DeadLetterKeyError, match="is not a Fernet key"):
        sealing.seal(b"z")
