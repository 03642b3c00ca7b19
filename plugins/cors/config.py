from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from backworks.pipeline.configs import problem_at
from backworks.plugins.cors.origins import ANY, parse_origin

# Pydantic copies a mutable default for each config; written as values, they show in `backworks docs`.
DEFAULT_ORIGINS = [ANY]
DEFAULT_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
DEFAULT_HEADERS = [ANY]
DEFAULT_MAX_AGE_S = 600
"""Seconds a browser may cache a preflight answer (browsers cap it: Chromium at 7200, Firefox at 86400)."""


def _origin(entry: str) -> str:
    return ANY if entry.strip() == ANY else parse_origin(entry).entry


Origin = Annotated[str, AfterValidator(_origin)]
"""An ``allow_origins`` entry, normalised (see ``backworks.plugins.cors.origins``)."""


class CorsConfig(BaseModel):
    """Who may call the API from a browser page on another origin (Fetch standard CORS)."""

    model_config = ConfigDict(extra="forbid")

    allow_origins: list[Origin] = Field(default=DEFAULT_ORIGINS, min_length=1, description=(
        "Origins allowed: `*`, exact (https://app.example.com), or patterns with `*` as the first host label "
        "(https://*.example.com: any subdomain, not the apex) or as the port (http://localhost:*)."))  # fmt: skip
    allow_methods: list[str] = Field(default=DEFAULT_METHODS, min_length=1, description=(
        "Methods a preflight may ask for; `*` allows any."))  # fmt: skip
    allow_headers: list[str] = Field(default=DEFAULT_HEADERS, description=(
        "Request headers a preflight may ask for (any case); `*` allows any (the requested ones are echoed, "
        "so it also works with credentials and for Authorization)."))  # fmt: skip
    expose_headers: list[str] = Field(default_factory=list, description=(
        "Response headers the page's script may read besides the CORS-safelisted ones."))  # fmt: skip
    allow_credentials: bool = Field(default=False, description=(
        "Let requests carry cookies or HTTP authentication; the origin is then echoed, never `*`."))  # fmt: skip
    max_age_s: int | None = Field(default=DEFAULT_MAX_AGE_S, ge=0, description=(
        "Seconds a browser may cache a preflight answer (Access-Control-Max-Age); null leaves it out."))  # fmt: skip

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if method != ANY and not method.isalpha():
                raise ValueError(f"{method!r} is not an HTTP method: use names such as GET or PATCH, or `*`")
        return [method.upper() for method in value]

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != ANY and not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
                raise ValueError(f"{name!r} is not a header name")
        return [name.lower() for name in value]

    @model_validator(mode="after")
    def _credentials(self) -> CorsConfig:
        if self.allow_credentials and ANY in self.allow_origins:
            raise problem_at(
                CorsConfig,
                ("allow_credentials",),
                (
                    "allow_credentials with allow_origins `*` would let every website read your users' authenticated "
                    "responses; list the origins (patterns such as https://*.example.com are allowed)"
                ),
                True,
            )
        if self.allow_credentials and ANY in self.expose_headers:
            raise problem_at(CorsConfig, ("expose_headers",), "with allow_credentials browsers read expose_headers "
                             "`*` as a header named '*': list the headers to expose", self.expose_headers)  # fmt: skip
        return self
