"""The notes example (examples/notes) running under ``backworks up`` on free ports, for the end-to-end tests.

The example folder is copied so its SQLite file and broker store live in a fresh state directory, and the port of
its search upstream (fixed in the blueprint, 9181) is replaced by a free one; nothing else is changed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notes"
SEARCH_PORT = "9181"
READY_TIMEOUT = 90.0
ALICE_KEY = "notes-demo-key-alice-0123456789abcdef"
"""The demo key of ``alice`` (notes:write), as the example's README documents it."""


@dataclass(frozen=True)
class RunningExample:
    base: str
    folder: Path
    state: Path
    log: Path


@contextmanager
def running_example(tmp: Path) -> Iterator[RunningExample]:
    """``backworks up`` of a copy of the example, healthy; stopped (with every child) on exit."""
    folder = tmp / "notes"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".backworks", "__pycache__"))
    blueprint = folder / "blueprint.yaml"
    blueprint.write_text(blueprint.read_text().replace(SEARCH_PORT, str(free_port())))
    state, log, port = tmp / "state", tmp / "up.log", free_port()
    process: subprocess.Popen[bytes] = start(
        "up", str(blueprint), "--port", str(port), log=log, cwd=tmp, env={"BACKWORKS_STATE_DIR": str(state)}
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, READY_TIMEOUT, process, log)
        yield RunningExample(base, folder, state, log)
    finally:
        stop(process)
