"""Revision v1: one numbered version of the running blueprint, as stored in the ``bw_config`` bucket.

``backworks up``/``declare`` store revision 1, ``backworks apply`` and ``rollback`` store the next ones; key
``rev.<number>`` holds a ``Revision`` and key ``current`` a ``CurrentPointer``. Every service watches ``current``
and stamps or serves envelopes with the revision they name (``Envelope.revision``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Revision(BaseModel):
    """One stored blueprint revision."""

    model_config = ConfigDict(extra="forbid")

    v: int = 1
    number: int = Field(ge=1)
    created_at: float
    """Unix time the revision was stored."""
    message: str = ""
    """What the person applying it said (``--message``)."""
    summary: str = ""
    """The diff against the previous revision in one line (``+2 instances, ~1 endpoint``)."""
    previous: int | None = None
    """The revision it replaced (None for the first)."""
    source: str
    """Absolute path of the blueprint file it came from: its relative paths (plugin folders...) resolve there."""
    blueprint: dict[str, Any]
    """The blueprint as written (parsed YAML, validated before it was stored)."""


class CurrentPointer(BaseModel):
    """Value of key ``current``: which revision runs."""

    model_config = ConfigDict(extra="forbid")

    revision: int = Field(ge=1)


class ProbeAnswer(BaseModel):
    """What one service answers on ``bw.config.probe``: the revision it runs and, when asked about a candidate
    blueprint, the problems it would have running it (empty: it can)."""

    model_config = ConfigDict(extra="forbid")

    role: str
    """``gateway`` or ``stage``."""
    name: str
    """The gateway's id, or the stage's instance."""
    replica: str
    revision: int | None = None
    plugins: dict[str, str] = Field(default_factory=dict)
    """For a stage replica: the plugin type it runs and its version."""
    problems: list[str] = Field(default_factory=list)
    checking: bool = False
    """True: the first word of a service asked about a candidate blueprint, sent before it checks it (so the asker
    knows to wait for it); the service's verdict follows as a second answer with ``checking`` false."""
