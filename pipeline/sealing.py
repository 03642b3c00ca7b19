"""The dead-letter key: what a replay needs from a request's credentials is kept only encrypted at rest.

Dead letters stay in ``BW_DLQ`` for days; the credentials of their requests are sealed with Fernet (AES-128-CBC
with an HMAC-SHA256, from the ``cryptography`` package) under one key per deployment:

- ``$BACKWORKS_DLQ_KEY_FILE`` when set: a key file the deployment provides (a docker-compose or Kubernetes
  secret), for services that do not share a state directory. It is never created: it must exist;
- otherwise ``dlq.key`` in the state directory (``$BACKWORKS_STATE_DIR``), created by whichever process needs it
  first: written to a private temporary file (mode 0600, opened with ``O_EXCL``) and hard-linked into place, so it
  appears whole or not at all and a process that loses the race reads the winner's key.

A process that needs to seal and has no key gets ``DeadLetterKeyError``; so does one that cannot open a seal
(no key file, or another key). Reading never creates a key: a new key opens nothing.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from backworks.pipeline.errors import PipelineError

KEY_FILE_ENV = "BACKWORKS_DLQ_KEY_FILE"
KEY_FILE_NAME = "dlq.key"
KEY_FILE_MODE = 0o600
PARTIAL_KEY_WAIT = 1.0
"""Seconds a reader waits for a key file another process is still writing (filesystems without hard links)."""

_keys: dict[Path, Fernet] = {}
_lock = threading.Lock()


class DeadLetterKeyError(PipelineError):
    """No dead-letter key to seal or open credentials with, or the key does not open a seal."""


def key_path() -> Path:
    """Where this process's dead-letter key is: ``$BACKWORKS_DLQ_KEY_FILE`` or ``<state dir>/dlq.key``."""
    given = os.environ.get(KEY_FILE_ENV)
    if given:
        return Path(given).expanduser().resolve()
    from backworks.local.state import state_dir  # a leaf module: the state directory's location only

    return state_dir() / KEY_FILE_NAME


def _create(path: Path) -> None:
    """Publish a new key at ``path`` atomically, unless another process already did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key() + b"\n"
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # O_EXCL, mode 0600
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(partial, path)
    except FileExistsError:
        pass  # another process published its key first: everyone uses that one
    except OSError:
        # No hard links here: create the final name exclusively and write it; readers wait for a whole key.
        try:
            final = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        except FileExistsError:
            pass
        else:
            with os.fdopen(final, "wb") as out:
                out.write(key)
    finally:
        os.unlink(partial)


def _read(path: Path) -> Fernet:
    give_up = time.monotonic() + PARTIAL_KEY_WAIT
    while True:
        try:
            text = path.read_bytes().strip()
        except OSError as exc:
            raise DeadLetterKeyError(f"cannot read the dead-letter key {path}: {exc.strerror or exc}") from exc
        if text or time.monotonic() > give_up:
            break
        time.sleep(0.01)  # another process is writing it
    try:
        return Fernet(text)
    except ValueError:
        raise DeadLetterKeyError(
            f"the dead-letter key {path} is not a Fernet key (32 url-safe base64-encoded bytes); generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        ) from None


def key(create: bool) -> Fernet:
    """This process's dead-letter key; with ``create``, made in the state directory if there is none yet."""
    path = key_path()
    with _lock:
        found = _keys.get(path)
        if found is not None:
            return found
        if not path.exists():
            if not create or os.environ.get(KEY_FILE_ENV):
                raise DeadLetterKeyError(
                    f"no dead-letter key at {path}: set {KEY_FILE_ENV} to the key file of the services that "
                    "wrote the dead letters (or run where they keep their state directory)"
                )
            _create(path)
        found = _keys[path] = _read(path)
        return found


def seal(data: bytes) -> str:
    """``data`` encrypted and authenticated with the dead-letter key (created if needed)."""
    return key(create=True).encrypt(data).decode("ascii")


def unseal(token: str) -> bytes:
    """What ``seal`` sealed; ``DeadLetterKeyError`` when there is no key or it is not the one that sealed it."""
    try:
        return key(create=False).decrypt(token.encode("ascii"))
    except InvalidToken:
        raise DeadLetterKeyError(
            f"the dead-letter key {key_path()} does not open this seal: it was made with another key; set "
            f"{KEY_FILE_ENV} to the key file of the services that wrote it"
        ) from None


def forget_keys() -> None:
    """Drop the keys read so far (tests that change the state directory)."""
    with _lock:
        _keys.clear()
