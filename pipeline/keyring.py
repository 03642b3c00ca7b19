"""The deployment's broker credentials in the state directory: one nkey per identity, and what each may do.

NATS nkeys (Ed25519): the server's configuration holds only public keys, so it has no secret to leak; a service
proves its identity by signing the server's nonce with its seed, which never crosses the wire. Verifying a
signature costs microseconds, where a bcrypt password check costs tens of milliseconds per connection.

Layout (directory 0700, every file 0600)::

    <state>/credentials/<identity>.nk       the identity's nkey seed (``SU…``): what its service connects with
    <state>/credentials/identities.json     identity -> public key, role, permissions (no secret)
    <state>/credentials/auth.conf           the nats-server ``authorization`` block the embedded servers include
    <state>/credentials/servers             client URL and pid of each embedded server that trusts these keys
    <state>/credentials/route.secret        password the nodes of a local cluster use on their routes

Writers take an exclusive ``flock`` and replace files atomically, so ``up`` and hand-run services can share it.
Whoever admits new identities (``up``, ``declare``, a hand-run ``gateway``/``serve``, a test) rewrites
``auth.conf`` and tells the running embedded servers to reload it (SIGHUP), so no server restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]  # no type hints
import psutil

from backworks.pipeline.permissions import Identity, base_identities

KEYRING_DIR = "credentials"
IDENTITIES_FILE = "identities.json"
SERVERS_FILE = "servers"
AUTH_FILE = "auth.conf"
SERVER_PROGRAM = "nats-server"
ROUTE_SECRET_FILE = "route.secret"  # noqa: S105  # a file name, not the secret
LOCK_FILE = ".lock"
SEED_SUFFIX = ".nk"
ROUTE_USER = "route"
DIR_MODE = 0o700
FILE_MODE = 0o600


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(temporary, FILE_MODE)
    os.replace(temporary, path)


def new_seed() -> str:
    """A fresh user nkey seed (``SU…``)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    key: bytes = nkeys.from_seed(bytearray(seed.encode())).public_key
    return key.decode()


class Keyring:
    """The credentials directory of one state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def exists(self) -> bool:
        return (self.root / IDENTITIES_FILE).exists()

    @property
    def identities_file(self) -> Path:
        return self.root / IDENTITIES_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, DIR_MODE)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def entries(self) -> dict[str, dict[str, Any]]:
        """identity -> {public_key, role, permissions, inbox_prefix} as recorded."""
        try:
            loaded: dict[str, dict[str, Any]] = json.loads(self.identities_file.read_text())
        except FileNotFoundError:
            return {}
        return loaded

    def seed(self, identity: str) -> str | None:
        try:
            return (self.root / f"{identity}{SEED_SUFFIX}").read_text().strip()
        except FileNotFoundError:
            return None

    def seed_file(self, identity: str) -> Path:
        return self.root / f"{identity}{SEED_SUFFIX}"

    def admit(self, identities: Iterable[Identity], *, replace: bool = False) -> bool:
        """Give every identity a key and record its permissions; returns whether anything changed.

        ``replace``: forget identities not given (except admin and tap), as ``up`` does for its blueprint.
        """
        wanted = {**base_identities(), **{identity.name: identity for identity in identities}}
        current = self.entries()
        if not replace and all(self._recorded(current.get(name), identity) for name, identity in wanted.items()):
            return False
        with self._locked():
            current = self.entries()
            merged = {} if replace else dict(current)
            for name, identity in wanted.items():
                seed = self.seed(name)
                if seed is None:
                    seed = new_seed()
                    write_private(self.seed_file(name), seed + "\n")
                merged[name] = {"public_key": public_key(seed), **identity.as_dict()}
            if merged == current and self.auth_file.exists():
                return False
            write_private(self.identities_file, json.dumps(merged, indent=2, sort_keys=True) + "\n")
            write_private(self.auth_file, self.authorization())
            self.reload_servers()
            return True

    @property
    def auth_file(self) -> Path:
        return self.root / AUTH_FILE

    def reload_servers(self) -> None:
        """SIGHUP every running embedded server of this keyring: nats-server re-reads its configuration."""
        for _, pid in self._servers():
            try:
                process = psutil.Process(pid)
                if SERVER_PROGRAM in process.name():  # a recorded pid may have been reused by another program
                    process.send_signal(signal.SIGHUP)
            except (psutil.Error, ValueError):
                continue

    @staticmethod
    def _recorded(entry: dict[str, Any] | None, identity: Identity) -> bool:
        if entry is None:
            return False
        return {key: value for key, value in entry.items() if key != "public_key"} == identity.as_dict()

    def authorization(self) -> str:
        """The nats-server ``authorization`` block: one nkey user per identity, with its permissions."""
        users = [
            {
                "nkey": entry["public_key"],
                "permissions": {
                    "publish": {"allow": entry["publish"]},
                    "subscribe": {"allow": entry["subscribe"]},
                    **({"allow_responses": True} if entry.get("allow_responses") else {}),
                },
            }
            for _, entry in sorted(self.entries().items())
        ]
        # JSON is valid nats-server configuration; quoted strings keep ``$JS...`` from reading as variables.
        return "authorization: " + json.dumps({"users": users}, indent=2) + "\n"

    def route_secret(self) -> str:
        """The password local cluster nodes use on their routes (created on first use)."""
        path = self.root / ROUTE_SECRET_FILE
        with self._locked():
            if not path.exists():
                write_private(path, secrets.token_urlsafe(24) + "\n")
        return path.read_text().strip()

    def add_server(self, url: str, pid: int) -> None:
        """Record that the embedded server at ``url`` (process ``pid``) trusts these keys."""
        with self._locked():
            known = [(known_url, known_pid) for known_url, known_pid in self._servers() if known_url != url]
            lines = [f"{known_url} {known_pid}" for known_url, known_pid in [*known, (url, pid)]]
            write_private(self.root / SERVERS_FILE, "\n".join(lines) + "\n")

    def _servers(self) -> list[tuple[str, int]]:
        try:
            lines = (self.root / SERVERS_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            url, _, pid = line.strip().partition(" ")
            if url:
                found.append((url, int(pid) if pid.isdigit() else 0))
        return found

    def servers(self) -> list[str]:
        return [url for url, _ in self._servers()]

    def governs(self, servers: Iterable[str]) -> bool:
        """Whether any of ``servers`` is an embedded server of this state directory."""
        known = {_normal(url) for url in self.servers()}
        return any(_normal(url) in known for url in servers)


def _normal(url: str) -> str:
    return url.strip().removeprefix("nats://").rstrip("/")
