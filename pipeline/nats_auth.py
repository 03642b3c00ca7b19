"""How a service proves who it is to NATS: the connect options of one identity, wherever its secret lives.

Looked up in this order, first found wins:

1. environment variables naming files (what docker-compose ``secrets:`` mount): ``BACKWORKS_NATS_CREDS`` (a
   ``.creds`` file), ``BACKWORKS_NATS_NKEY`` (an nkey seed file), ``BACKWORKS_NATS_USER`` with
   ``BACKWORKS_NATS_PASSWORD_FILE``, ``BACKWORKS_NATS_TOKEN_FILE``;
2. the blueprint's ``nats:`` section (``creds``, ``nkey_seed``, ``user``/``password``, ``token``);
3. the state directory's keyring, when the servers are the embedded broker started from it: the identity's own
   nkey seed (``backworks up`` and ``backworks nats`` generate them);
4. nothing: an external broker without authentication.

TLS (``tls: {ca, cert, key}`` in the blueprint, or ``BACKWORKS_NATS_TLS_CA/CERT/KEY``) applies whatever the
source. Secrets are read from files or ``SecretStr`` fields, never from the command line, and never logged:
:meth:`NatsAuth.describe` names only where they came from.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from backworks.contracts.blueprint import NatsSettings, TlsSettings
from backworks.contracts.names import identity_inbox
from backworks.pipeline.keyring import KEYRING_DIR, Keyring

CREDS_ENV = "BACKWORKS_NATS_CREDS"
NKEY_ENV = "BACKWORKS_NATS_NKEY"
USER_ENV = "BACKWORKS_NATS_USER"
PASSWORD_FILE_ENV = "BACKWORKS_NATS_PASSWORD_FILE"  # noqa: S105  # the variable's name, not a password
TOKEN_FILE_ENV = "BACKWORKS_NATS_TOKEN_FILE"  # noqa: S105  # the variable's name, not a token
TLS_CA_ENV = "BACKWORKS_NATS_TLS_CA"
TLS_CERT_ENV = "BACKWORKS_NATS_TLS_CERT"
TLS_KEY_ENV = "BACKWORKS_NATS_TLS_KEY"


@dataclass(frozen=True)
class NatsAuth:
    """What one process connects with. Build it with :func:`resolve`."""

    identity: str
    source: str
    """Where the credentials came from (for messages; never the secret)."""
    nkey_seed: SecretStr | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    tls: TlsSettings | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's ``connect``."""
        options: dict[str, Any] = {"inbox_prefix": identity_inbox(self.identity)}
        if self.nkey_seed is not None:
            options["nkeys_seed_str"] = self.nkey_seed.get_secret_value()
        if self.nkey_seed_file:
            options["nkeys_seed"] = self.nkey_seed_file
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        if self.user:
            options["user"] = self.user
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        if self.token is not None:
            options["token"] = self.token.get_secret_value()
        if self.tls is not None:
            options["tls"] = tls_context(self.tls)
        return options

    def describe(self) -> str:
        return f"identity {self.identity} ({self.source})"


def tls_context(settings: TlsSettings) -> ssl.SSLContext:
    """A client TLS context: the CA to trust (default: the system's) and a client certificate if given."""
    context = ssl.create_default_context(cafile=settings.ca)
    if settings.cert:
        context.load_cert_chain(settings.cert, settings.key)
    return context


def _read(path: str) -> SecretStr:
    return SecretStr(Path(path).read_text().strip())


def _from_environment(identity: str) -> NatsAuth | None:
    env = os.environ
    tls = _tls_from_environment()
    if env.get(CREDS_ENV):
        return NatsAuth(identity, f"${CREDS_ENV}", creds_file=env[CREDS_ENV], tls=tls)
    if env.get(NKEY_ENV):
        return NatsAuth(identity, f"${NKEY_ENV}", nkey_seed_file=env[NKEY_ENV], tls=tls)
    if env.get(USER_ENV):
        password = _read(env[PASSWORD_FILE_ENV]) if env.get(PASSWORD_FILE_ENV) else None
        return NatsAuth(identity, f"${USER_ENV}", user=env[USER_ENV], password=password, tls=tls)
    if env.get(TOKEN_FILE_ENV):
        return NatsAuth(identity, f"${TOKEN_FILE_ENV}", token=_read(env[TOKEN_FILE_ENV]), tls=tls)
    return None


def _tls_from_environment() -> TlsSettings | None:
    ca, cert, key = (os.environ.get(name) for name in (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV))
    return TlsSettings(ca=ca, cert=cert, key=key) if ca or cert else None


def _from_settings(identity: str, settings: NatsSettings) -> NatsAuth | None:
    tls = settings.tls
    if settings.creds:
        return NatsAuth(identity, "blueprint nats.creds", creds_file=settings.creds, tls=tls)
    if settings.nkey_seed:
        return NatsAuth(identity, "blueprint nats.nkey_seed", nkey_seed_file=settings.nkey_seed, tls=tls)
    if settings.user:
        return NatsAuth(identity, "blueprint nats.user", user=settings.user, password=settings.password, tls=tls)
    if settings.token is not None:
        return NatsAuth(identity, "blueprint nats.token", token=settings.token, tls=tls)
    return None


def keyring(state: Path | None = None) -> Keyring:
    """The keyring of ``state`` (default: this process's state directory)."""
    if state is None:
        from backworks.local.state import state_path

        state = state_path()  # not created: a service of an external broker may run where it cannot write
    return Keyring(state / KEYRING_DIR)


def resolve(identity: str, servers: list[str], settings: NatsSettings | None = None) -> NatsAuth:
    """The credentials ``identity`` connects to ``servers`` with (see the module docstring for the order)."""
    found = _from_environment(identity)
    if found is None and settings is not None:
        found = _from_settings(identity, settings)
    if found is not None:
        return found
    tls = settings.tls if settings is not None else _tls_from_environment()
    ring = keyring()
    if ring.governs(servers):
        seed = ring.seed(identity)
        if seed is not None:
            return NatsAuth(identity, f"keyring {ring.root}", nkey_seed=SecretStr(seed), tls=tls)
        return NatsAuth(identity, f"keyring {ring.root} has no key for it", tls=tls)
    return NatsAuth(identity, "no credentials", tls=tls)
