from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MockConfig(BaseModel):
    """A fixed response. Strings in ``body`` and ``headers`` may use ``{path.x}``, ``{query.x}``, ``{header.x}``,
    ``{principal.consumer}``."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(default=200, ge=100, le=599, description="HTTP status code.")
    headers: dict[str, str] = Field(default_factory=dict, description="Response headers.")
    body: Any = Field(default=None, description="JSON value (sent as application/json) or a string (text/plain).")
    content_type: str | None = Field(default=None, description="Overrides the content type chosen from the body.")
