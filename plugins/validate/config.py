from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, WithJsonSchema, model_validator

from backworks.pipeline.configs import problem_at
from backworks.pipeline.files import as_file_ref, read_data
from backworks.plugins.validate.openapi import UnknownOperation, operation_rules
from backworks.plugins.validate.rules import Location, Param, Rules, compile_schema
from backworks.plugins.validate.schemas import METASCHEMA, check

DEFAULT_MAX_ERRORS = 100
"""Violations listed in one 422 answer at most (the answer says how many there were in all)."""

Schema = Annotated[
    dict[str, Any] | bool | None,
    WithJsonSchema({"$ref": METASCHEMA, "description": "A JSON Schema (Draft 2020-12), or {file: path} to one."}),
]
"""A JSON Schema written inline or ``{file: schemas/note.json}`` (JSON or YAML, relative to the blueprint)."""


class RequiredParams(BaseModel):
    """Parameters that must be present, per location (path parameters always are)."""

    model_config = ConfigDict(extra="forbid")

    query: list[str] = Field(default_factory=list, description="Query parameters that must be present.")
    headers: list[str] = Field(default_factory=list, description="Request headers that must be present.")


class ValidateConfig(BaseModel):
    """What to check in a request: inline schemas (``body``, ``query``, ``path``, ``headers``) or an OpenAPI operation.

    Parameters are optional unless listed under ``required`` (path parameters always are). String values are
    coerced to their schema's type (``integer``, ``number``, ``boolean``) before they are validated.
    """

    model_config = ConfigDict(extra="forbid")

    body: Schema = Field(default=None, description=(
        "JSON Schema of the JSON request body, inline or {file: path}; a non-JSON Content-Type is answered "
        "with 415, malformed JSON with 400."))  # fmt: skip
    body_required: bool = Field(default=True, description="An empty body is a violation when `body` is given.")
    query: dict[str, Schema] = Field(default_factory=dict, description="Query parameter name -> JSON Schema.")
    path: dict[str, Schema] = Field(default_factory=dict, description="Path parameter name -> JSON Schema.")
    headers: dict[str, Schema] = Field(default_factory=dict, description="Header name (any case) -> JSON Schema.")
    required: RequiredParams = Field(default_factory=RequiredParams, description=(
        "Query parameters and headers that must be present: {query: [name], headers: [name]}."))  # fmt: skip
    openapi: str | None = Field(default=None, description=(
        "OpenAPI 3.x document (YAML or JSON, relative to the blueprint) to take the rules from, with "
        "`operation`."))  # fmt: skip
    operation: str | None = Field(default=None, description="operationId of the operation in `openapi` to check.")
    formats: bool = Field(default=True, description=(
        "Assert `format` (email, uuid, date-time, ipv4...) rather than treat it as an annotation."))  # fmt: skip
    max_errors: int = Field(default=DEFAULT_MAX_ERRORS, ge=1, description=(
        "Violations listed in one 422 answer at most; `error_count` gives the total."))  # fmt: skip

    _rules: Rules = PrivateAttr(default_factory=Rules)

    @property
    def rules(self) -> Rules:
        """The compiled rules (built when the config is validated)."""
        return self._rules

    @model_validator(mode="after")
    def _compile(self, info: ValidationInfo) -> ValidateConfig:
        inline = self.body is not None or self.query or self.path or self.headers
        if (self.openapi is None) != (self.operation is None):
            missing = "operation" if self.operation is None else "openapi"
            raise problem_at(ValidateConfig, (missing,), "`openapi` and `operation` go together: name the document "
                             "and the operationId in it")  # fmt: skip
        if self.openapi is not None and self.operation is not None:
            if inline or self.required.query or self.required.headers:
                raise problem_at(ValidateConfig, ("openapi",), "use either `openapi` + `operation` or inline schemas "
                                 "(body, query, path, headers, required), not both")  # fmt: skip
            try:
                _, document = read_data(self.openapi, info)
                self._rules = operation_rules(document, self.operation, self.openapi, formats=self.formats)
            except UnknownOperation as exc:
                raise problem_at(ValidateConfig, ("operation",), str(exc), self.operation) from None
            except ValueError as exc:
                raise problem_at(ValidateConfig, ("openapi",), str(exc), self.openapi) from None
            return self
        if not inline:
            raise ValueError("nothing to validate: give `body`, `query`, `path` or `headers`, or `openapi` + "
                             "`operation`")  # fmt: skip
        body = None
        if self.body is not None:
            self.body = _load(self.body, ("body",), info)
            body = compile_schema(self.body, None, self.formats)
        params: list[Param] = []
        wanted = {
            Location.QUERY: set(self.required.query),
            Location.HEADERS: {h.lower() for h in self.required.headers},
        }
        for location, declared in ((Location.PATH, self.path), (Location.QUERY, self.query),
                                   (Location.HEADERS, self.headers)):  # fmt: skip
            names = set()
            for name, raw in declared.items():
                schema = declared[name] = _load(raw, (location.value, name), info)
                key = name.lower() if location is Location.HEADERS else name
                names.add(key)
                params.append(Param.build(location, name, schema, required=key in wanted.get(location, set()),
                                          formats=self.formats))  # fmt: skip
            for name in sorted(wanted.get(location, set()) - names):  # required, any value
                params.append(Param.build(location, name, None, required=True, formats=self.formats))
        self._rules = Rules(tuple(params), body, self.body_required, body_schema=self.body, body_root=self.body)
        return self


def _load(raw: Any, loc: tuple[str, ...], info: ValidationInfo) -> Any:
    """The schema ``raw`` stands for (read from its file when it is ``{file: path}``), checked."""
    path = as_file_ref(raw)
    try:
        if path is None:
            check(raw, "the schema")
            return raw
        _, schema = read_data(path, info)
        check(schema, f"schema file {path!r}")
    except ValueError as exc:
        raise problem_at(ValidateConfig, loc, str(exc)) from None
    return schema
