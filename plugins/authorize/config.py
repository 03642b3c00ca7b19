from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backworks.pipeline.audit import AuditLevel


class AuthorizeConfig(BaseModel):
    """What the authenticated caller must have: every scope listed, and/or to be one of the consumers listed."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(
        default_factory=list, description="Scopes the caller must all have (e.g. `[notes:write]`)."
    )
    consumers: list[str] = Field(
        default_factory=list, description="Consumers allowed (any of them); empty: any authenticated consumer."
    )
    audit: AuditLevel = Field(
        default=AuditLevel.ALL,
        description="Decisions published on the event stream (`bw.evt.security.allowed|denied`): all, denied or none.",
    )

    @model_validator(mode="after")
    def _says_something(self) -> AuthorizeConfig:
        if not self.scopes and not self.consumers:
            raise ValueError(
                "set `scopes` and/or `consumers`: an authorize stage that requires nothing allows everyone"
            )
        return self
