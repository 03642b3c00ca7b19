"""Where Backworks keeps local state (the embedded broker's store, pid files)."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "BACKWORKS_STATE_DIR"
DEFAULT_STATE_DIR = ".backworks"


def state_path() -> Path:
    """``$BACKWORKS_STATE_DIR`` or ``./.backworks``, not created (services only read from it)."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR).resolve()


def state_dir() -> Path:
    """``$BACKWORKS_STATE_DIR`` or ``./.backworks``, created on demand."""
    path = state_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


NATS_URL_FILE = "nats.url"
"""Where ``backworks nats`` records the URL(s) of the broker it runs (comma-separated for a cluster), for commands
run by hand."""


def recorded_nats_url() -> str | None:
    """The embedded broker running for this state directory, if ``backworks nats`` recorded one."""
    path = state_dir() / NATS_URL_FILE
    return path.read_text().strip() if path.exists() else None
