"""Plugin configs: the JSON Schema generated from a plugin's ``Config`` model, and validating data against it.

Validation runs the JSON Schema first (jsonschema, the language-neutral contract a blueprint editor or a
plugin in another language sees), then the pydantic model itself (for validators a schema cannot express).
Every problem is returned with its path inside the config; messages about secret fields never quote the
value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.exceptions import ValidationError as SchemaViolation
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from backworks.pipeline.secrets import MASK, config_schema, is_secret_path

PathPart = str | int


@dataclass(frozen=True)
class ConfigContext:
    """Where a config is used, for validators that need more than the config itself.

    Passed as pydantic's validation context (``info.context`` in a ``field_validator``/``model_validator``) when a
    blueprint is validated; ``None`` when a config is built on its own (tests, the SDK). A validator may import a
    user's module from ``blueprint_dir`` (the ``python`` handler) or compare its own timeouts with the instance's
    time limit (the ``proxy`` handler).
    """

    instance: str
    """The plugin instance the config belongs to."""
    blueprint_dir: Path
    """Folder of the blueprint file (absolute)."""
    plugin_dirs: tuple[Path, ...] = ()
    """The blueprint's ``plugin_dirs``, absolute."""
    timeout_s: float | None = None
    """Seconds one hook call of the instance may take (its ``timeout_ms`` or the plugin's ``max_execution_time``)."""
    max_concurrent: int | None = None
    """The instance's ``limits.max_concurrent`` (messages one replica works on at once), when set."""
    max_body_bytes: int | None = None
    """The gateway's request body limit."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a plugin config: where (path inside the config) and what."""

    path: tuple[PathPart, ...]
    message: str
    at_key: bool = False
    """True when the problem is the key itself (an unknown key), not its value."""


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config model, fields secret by their name marked (``secrets``)."""
    return config_schema(model)


@cache
def _validator(model: type[BaseModel]) -> Draft202012Validator:
    return Draft202012Validator(schema_of(model))


def schema_problems(model: type[BaseModel], *, check_metaschema: bool = True) -> list[str]:
    """Why ``model`` cannot serve as a plugin config (empty when it can).

    ``check_metaschema=False`` skips validating the generated schema against the 2020-12 metaschema (~8 ms a
    plugin): for the built-in plugins, whose schemas a test checks, so that ``backworks validate`` starts fast.
    """
    problems: list[str] = []
    extra = model.model_config.get("extra")
    if extra != "forbid":
        problems.append(
            f"`Config` ({model.__name__}) must reject unknown keys so blueprint typos are caught: "
            "set `model_config = ConfigDict(extra='forbid')`"
        )
    try:
        schema = schema_of(model)
    except Exception as exc:
        return [*problems, f"`Config` ({model.__name__}) has no JSON Schema: {exc}; use JSON-compatible field types"]
    if not check_metaschema:
        return problems
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problems.append(f"`Config` ({model.__name__}) generates an invalid JSON Schema: {exc.message}")
    return problems


def _describe(error: SchemaViolation, secret: bool) -> str:
    if error.context:
        error = best_match(error.context)
    if not secret:
        return str(error.message)
    return f"secret value rejected by the schema's `{error.validator}` rule ({error.validator_value!r}); value hidden"


def _unknown_keys(error: SchemaViolation) -> list[str]:
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    known = set(schema.get("properties", {}))
    patterns = schema.get("patternProperties", {})
    if patterns:
        return [k for k in instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]
    return [str(k) for k in instance if k not in known]


def _schema_problems(model: type[BaseModel], data: Any) -> list[ConfigProblem]:
    schema = schema_of(model)
    problems: list[ConfigProblem] = []
    errors = sorted(_validator(model).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and error.schema.get("additionalProperties") is False:
            for key in _unknown_keys(error):
                problems.append(ConfigProblem((*path, key), f"unknown key {key!r}", at_key=True))
            continue
        problems.append(ConfigProblem(path, _describe(error, is_secret_path(schema, path))))
    return problems


def _model_problems(model: type[BaseModel], exc: ValidationError) -> list[ConfigProblem]:
    schema = schema_of(model)
    problems: list[ConfigProblem] = []
    for item in exc.errors():
        loc = list(item["loc"])
        at_key = item["type"] == "extra_forbidden" or (bool(loc) and loc[-1] == "[key]")
        path = tuple(part for part in loc if part != "[key]")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = f"unknown key {path[-1]!r}"
        elif is_secret_path(schema, path):
            message = f"secret value rejected ({item['type']}); value hidden"
        elif item["type"] == "value_error":  # the validator's own message says it all; pydantic prefixes its kind
            message = message.removeprefix("Value error, ")
        problems.append(ConfigProblem(path, message, at_key))
    return problems


def validate_config(
    model: type[BaseModel], data: Any, context: ConfigContext | Path | None = None
) -> tuple[BaseModel | None, list[ConfigProblem]]:
    """Check ``data`` against the model's JSON Schema, then build the model; every problem is returned.

    ``context`` (where the config is used) reaches the model's validators as pydantic's validation context; a
    folder alone stands for a context that knows only the blueprint's folder (files the config refers to are read
    from there, ``backworks.pipeline.files``).
    """
    problems = _schema_problems(model, data)
    if problems:
        return None, problems
    try:
        if isinstance(context, Path):
            context = ConfigContext(instance="", blueprint_dir=context.resolve())
        return model.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, _model_problems(model, exc)


def problem_at(model: type[BaseModel], loc: tuple[PathPart, ...], message: str, value: Any = None) -> ValidationError:
    """A ``ValidationError`` at ``loc`` inside the config, for a model validator to raise.

    A model validator's ``ValueError`` is reported at the config's root; raising this instead puts the problem
    (and its blueprint line) at the field it is about, such as ``/config/body/properties/title``.
    """
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(model.__name__, [InitErrorDetails(type=error, loc=loc, input=value)])


@dataclass(frozen=True)
class FieldDoc:
    """One top-level config field, described for people (``plugins show``, ``docs``)."""

    name: str
    type: str
    required: bool
    default: Any
    description: str
    secret: bool
    has_default: bool = True
    """False when the default is computed (``default_factory``), so the schema does not state it."""

    @property
    def shown_default(self) -> str:
        """The default as JSON, or empty when required or not stated."""
        return json.dumps(self.default) if self.has_default and not self.required else ""


def _type_name(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    if "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " | ".join(_type_name(branch, root) for branch in node[key])
    if "enum" in node:
        return " | ".join(repr(value) for value in node["enum"])
    if "const" in node:
        return repr(node["const"])
    kind = node.get("type")
    if kind == "array":
        items = node.get("items")
        return f"list of {_type_name(items, root)}" if isinstance(items, Mapping) else "list"
    if kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return f"map of string to {_type_name(node['additionalProperties'], root)}"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    bounds = [f"{label} {node[key]}" for key, label in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"),
                                                      ("exclusiveMaximum", "<"))
              if key in node]  # fmt: skip
    name = str(kind) if kind else "any"
    return f"{name} ({', '.join(bounds)})" if bounds else name


def fields_of(model: type[BaseModel]) -> list[FieldDoc]:
    """Top-level fields of a config model with type, default, description and secrecy."""
    schema = schema_of(model)
    required = set(schema.get("required", []))
    docs: list[FieldDoc] = []
    for name, node in schema.get("properties", {}).items():
        secret = is_secret_path(schema, (name,))
        default = node.get("default")
        docs.append(
            FieldDoc(
                name=name,
                type=_type_name(node, schema),
                required=name in required,
                default=MASK if secret and default is not None else default,
                description=str(node.get("description", "")),
                secret=secret,
                has_default="default" in node,
            )
        )
    return docs
