"""A blueprint served by a real ``backworks up`` for a whole test module, and the CLI run against it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backworks.local.ports import free_port
from backworks.pipeline.nats_auth import NatsAuth, keyring
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy

CLI_TIMEOUT = 120.0
UP_STOP_TIMEOUT = 15.0


@dataclass
class Deployment:
    folder: Path
    blueprint: Path
    base: str
    env: dict[str, str]
    log: Path
    """``up``'s output (its children's JSON log lines included)."""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``backworks ARGS`` against this deployment (its state directory), run to completion."""
        return subprocess.run(
            [BACKWORKS, *args], capture_output=True, text=True, env=self.env, cwd=self.folder, timeout=CLI_TIMEOUT,
            check=False,
        )  # fmt: skip

    def nats_url(self) -> str:
        return (self.folder / "state" / "nats.url").read_text().strip()

    def auth(self, identity: str) -> NatsAuth:
        """Credentials of one of the deployment's broker identities (its nkey seed under the state directory)."""
        return NatsAuth(identity, "test", nkey_seed_file=str(keyring(self.folder / "state").seed_file(identity)))


@contextmanager
def deployed(folder: Path, blueprint_text: str, *, allow_fault: bool = False) -> Iterator[Deployment]:
    """``backworks up`` on ``blueprint_text`` in ``folder`` (state in ``folder/state``) until the block ends."""
    blueprint = folder / "blueprint.yaml"
    blueprint.write_text(blueprint_text)
    port = free_port()
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(folder / "state")}
    if allow_fault:
        env["BACKWORKS_ALLOW_FAULT"] = "1"
    log = folder / "up.log"
    up = start("up", str(blueprint), "--port", str(port), log=log, cwd=folder, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=up, log=log)
        yield Deployment(folder, blueprint, base, env, log)
    finally:
        stop(up, timeout=UP_STOP_TIMEOUT)
