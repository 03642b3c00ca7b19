from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ResponseHeadersConfig(BaseModel):
    """Headers to set on or remove from the response."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, str] = Field(default_factory=dict, description="Header name -> value; replaces any existing value.")
    remove: list[str] = Field(default_factory=list, description="Header names to drop.")
