"""Plugin config secrets: which fields are secret, their values, and masking them everywhere.

A config field is secret when

- its type is pydantic's ``SecretStr``/``SecretBytes`` (JSON Schema ``writeOnly``/``format: password``), or it is
  marked ``Field(json_schema_extra={"secret": True})`` (*declared* secrets); or
- its own name (not a parent's) contains ``password``, ``secret``, ``token`` or ``key`` in any case (``api_token``,
  ``db_password``, ``signingKey``) and its value can hold text: a string, an untyped value, or a list or map of
  them (*named* secrets). Numbers, booleans, enums and nested models are never secret by name (``key_size: int``,
  ``keys: {limit: 5}``); a nested model's own fields are judged by their own names. A field named like a secret
  that is not one says so: ``Field(json_schema_extra={"secret": False})`` (e.g. ``token_url``, ``key_header``).

``config_schema`` writes the name rule into the generated JSON Schema (``"secret": true``), so the schema a
blueprint editor or a plugin in another language sees, ``plugins show``, ``docs`` and validation messages all
agree with what is masked at run time.

A secret field is always masked when a config is rendered (``redact``, ``redact_schema``). Its values are also
registered per process, when a blueprint is loaded and when a plugin is built, and ``mask`` replaces them with
``MASK`` in any text: the structlog processor ``mask_secrets`` applies it to every log line, and the executor
applies it to failure reasons before they reach an envelope, an event, a breaker record or the HTTP client.
Free-text masking replaces a value wherever it appears, so what gets registered is chosen with care:

- values shorter than ``MIN_MASKED_LENGTH`` never are (they would match everywhere);
- the items of a list or map that is secret *only by its name* (``keys: [alice, bob]`` may well list consumer
  names) are registered only from ``MIN_LISTED_SECRET_LENGTH`` characters, the length of a generated key; shorter
  ones are still masked wherever the config is rendered. Declare such a field secret (or give it a ``SecretStr``
  type) to have every item masked in free text too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from enum import Enum
from functools import cache
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "********"
MIN_MASKED_LENGTH = 4
"""Shorter secret values are not searched for in free text: they would match everywhere. Secret fields are
still always masked when a config is rendered."""
MIN_LISTED_SECRET_LENGTH = 16
"""Items of a list or map secret only by its name are masked in free text from this length (a generated key's)."""
SECRET_KEYWORD = "secret"  # noqa: S105  # the schema keyword that marks a field secret, not a password
SECRET_NAME = re.compile(r"password|secret|token|key", re.IGNORECASE)
"""A field whose own name matches is secret when its value can hold text (see the module docstring)."""


class Secrecy(str, Enum):
    """Why a config field is secret."""

    DECLARED = "declared"
    """Its type is ``SecretStr``/``SecretBytes`` or it is marked ``json_schema_extra={"secret": True}``."""
    NAMED = "named"
    """Its name looks like a secret's and its value can hold text."""


_known: set[str] = set()
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()


def is_secret_schema(schema: Mapping[str, Any]) -> bool:
    """True when a JSON Schema node describes a secret value."""
    return bool(schema.get(SECRET_KEYWORD) or schema.get("writeOnly") or schema.get("format") == "password")


def _deref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}
    return schema


def _children(schema: Mapping[str, Any], root: Mapping[str, Any], part: str | int) -> list[Mapping[str, Any]]:
    schema = _deref(schema, root)
    found: list[Mapping[str, Any]] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []):
            found += _children(branch, root, part)
    properties = schema.get("properties", {})
    if isinstance(part, str) and part in properties:
        found.append(properties[part])
    elif isinstance(schema.get("additionalProperties"), Mapping) and isinstance(part, str):
        found.append(schema["additionalProperties"])
    if isinstance(part, int):
        prefix = schema.get("prefixItems", [])
        if part < len(prefix):
            found.append(prefix[part])
        elif isinstance(schema.get("items"), Mapping):
            found.append(schema["items"])
    return found


def _secret_here(schema: Mapping[str, Any], root: Mapping[str, Any]) -> bool:
    schema = _deref(schema, root)
    if is_secret_schema(schema):
        return True
    return any(_secret_here(branch, root) for key in ("anyOf", "oneOf", "allOf") for branch in schema.get(key, []))


def is_secret_path(schema: Mapping[str, Any], path: Iterable[str | int]) -> bool:
    """True when the value at ``path`` inside a config lies in (or is) a secret field of ``schema``."""
    nodes: list[Mapping[str, Any]] = [schema]
    for part in path:
        if any(_secret_here(node, schema) for node in nodes):
            return True
        nodes = [child for node in nodes for child in _children(node, schema, part)]
        if not nodes:
            return False
    return any(_secret_here(node, schema) for node in nodes)


def _holds_text(schema: Mapping[str, Any], root: Mapping[str, Any]) -> bool:
    """True when a value of this JSON Schema node can be text: a string, untyped, or a list or map of them."""
    if "$ref" in schema:
        return False  # a nested model: its own fields are judged by their own names
    if "enum" in schema or "const" in schema:
        return False  # a choice among known words is no secret
    branches = [branch for key in ("anyOf", "oneOf") for branch in schema.get(key, [])]
    if branches:
        return any(_holds_text(branch, root) for branch in branches)
    kind = schema.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if "string" in kinds or kind is None:
        return True
    if "array" in kinds:
        items = schema.get("items")
        return not isinstance(items, Mapping) or _holds_text(items, root)
    if "object" in kinds and "properties" not in schema:
        values = schema.get("additionalProperties", True)
        return values is True or (isinstance(values, Mapping) and _holds_text(values, root))
    return False


def name_looks_secret(name: str) -> bool:
    """True when a field's own name says it holds a secret (``api_token``, ``db_password``, ``signingKey``)."""
    return SECRET_NAME.search(name) is not None


def mark_named_secrets(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``"secret": true`` to every property of ``schema`` (``$defs`` included) that is secret by its name.

    A property that states ``secret`` itself (``json_schema_extra={"secret": False}``) keeps what it states.
    """

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name, child in properties.items():
                if (
                    isinstance(child, dict)
                    and SECRET_KEYWORD not in child
                    and name_looks_secret(name)
                    and _holds_text(child, schema)
                ):
                    child[SECRET_KEYWORD] = True
        for value in node.values():
            visit(value)

    visit(schema)
    return schema


@cache
def config_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config model, secret-by-name fields marked ``"secret": true``.

    Callers share the returned dict: never change it.
    """
    return mark_named_secrets(model.model_json_schema(mode="validation"))


@cache
def secret_fields(model: type[BaseModel]) -> Mapping[str, Secrecy]:
    """The secret fields of a model (by Python name) and why each is secret: what ``config_schema`` says."""
    try:
        schema = config_schema(model)
    except Exception:  # no JSON Schema (not a valid plugin config): judge by marks and names alone
        schema = {}
    properties = schema.get("properties", {})
    found: dict[str, Secrecy] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, Mapping) else {}
        node = properties.get(info.alias or name, properties.get(name))
        if extra.get(SECRET_KEYWORD) or (isinstance(node, Mapping) and _declared_here(node, schema)):
            found[name] = Secrecy.DECLARED
        elif isinstance(node, Mapping):
            if node.get(SECRET_KEYWORD) is True:  # marked by name in ``config_schema``
                found[name] = Secrecy.NAMED
        elif not schema and extra.get(SECRET_KEYWORD) is not False and name_looks_secret(name):
            found[name] = Secrecy.NAMED
    return found


def _declared_here(schema: Mapping[str, Any], root: Mapping[str, Any]) -> bool:
    schema = _deref(schema, root)
    if schema.get("writeOnly") or schema.get("format") == "password":
        return True
    return any(_declared_here(branch, root) for key in ("anyOf", "oneOf", "allOf") for branch in schema.get(key, []))


def _field_is_secret(model: type[BaseModel], name: str) -> bool:
    return name in secret_fields(model)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, SecretBytes):
        yield value.get_secret_value().decode("utf-8", "replace")
    elif isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            yield from _strings(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _strings(item)


def secret_values(config: Any) -> set[str]:
    """Every secret string held by a config model (nested models, lists and dicts included), for free-text masking.

    The items of a list or map secret only by its name count from ``MIN_LISTED_SECRET_LENGTH`` characters.
    """
    found: set[str] = set()
    if isinstance(config, (SecretStr, SecretBytes)):
        found.update(_strings(config))
    elif isinstance(config, BaseModel):
        fields = secret_fields(type(config))
        for name in type(config).model_fields:
            value = getattr(config, name, None)
            secrecy = fields.get(name)
            if secrecy is Secrecy.DECLARED or (secrecy is Secrecy.NAMED and isinstance(value, (str, bytes))):
                found.update(_strings(value))
            elif secrecy is Secrecy.NAMED:
                found.update(item for item in _strings(value) if len(item) >= MIN_LISTED_SECRET_LENGTH)
                found.update(secret_values(value))
            else:
                found.update(secret_values(value))
    elif isinstance(config, Mapping):
        for item in config.values():
            found.update(secret_values(item))
    elif isinstance(config, (list, tuple, set, frozenset)):
        for item in config:
            found.update(secret_values(item))
    return {value for value in found if value}


def register(values: Iterable[str]) -> None:
    """Remember secret values so that ``mask`` (and so every log line) hides them in this process."""
    global _ordered
    fresh = {value for value in values if len(value) >= MIN_MASKED_LENGTH} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def forget_all() -> None:
    """Drop every registered secret (tests)."""
    global _ordered
    with _lock:
        _known.clear()
        _ordered = ()


def mask(text: str, values: Iterable[str] | None = None) -> str:
    """``text`` with every registered secret (and every one of ``values``) replaced by ``MASK``."""
    candidates = _ordered if values is None else sorted(set(values) | _known, key=len, reverse=True)
    return _replace(text, candidates)


def _replace(text: str, candidates: Iterable[str]) -> str:
    for secret in candidates:
        if len(secret) >= MIN_MASKED_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_value(value: Any, candidates: tuple[str, ...]) -> Any:
    """``value`` (text, or lists and dicts of it, or an exception) with each of ``candidates`` replaced by ``MASK``.

    ``candidates`` go longest first, so that a secret containing another is masked whole.
    """
    if isinstance(value, str):
        return _replace(value, candidates)
    if isinstance(value, dict):
        return {key: mask_value(item, candidates) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_value(item, candidates) for item in value)
    if isinstance(value, BaseException):
        masked = _replace(str(value), candidates)
        return value if masked == str(value) else f"{type(value).__name__}: {masked}"
    return value


def _mask_value(value: Any) -> Any:
    return mask_value(value, _ordered)


def mask_secrets(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide registered secrets in every value of a log event."""
    if not _ordered:
        return event_dict
    for key, value in event_dict.items():
        event_dict[key] = _mask_value(value)
    return event_dict


def redact(config: BaseModel) -> dict[str, Any]:
    """The config as JSON data with every secret field replaced by ``MASK``: safe to print or return."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True)
    return _redact_model(config, data)


def _redact_model(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        if key not in data:
            continue
        value = getattr(model, name, None)
        if _field_is_secret(type(model), name) or isinstance(value, (SecretStr, SecretBytes)):
            data[key] = _masked_shape(data[key])
        elif isinstance(value, BaseModel) and isinstance(data[key], dict):
            data[key] = _redact_model(value, data[key])
        elif isinstance(value, (list, tuple)) and isinstance(data[key], list):
            data[key] = [
                _redact_model(item, dumped) if isinstance(item, BaseModel) and isinstance(dumped, dict) else dumped
                for item, dumped in zip(value, data[key], strict=False)
            ]
        elif isinstance(value, Mapping) and isinstance(data[key], dict):
            data[key] = {
                k: _redact_model(item, data[key][k]) if isinstance(item, BaseModel) else data[key][k]
                for k, item in value.items()
                if k in data[key]
            }
    masked = _mask_value(data)
    return masked if isinstance(masked, dict) else data


def _masked_shape(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: _masked_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked_shape(item) for item in value]
    return MASK


def redact_schema(schema: Any, root: Mapping[str, Any] | None = None) -> Any:
    """A JSON Schema with the ``default`` and ``examples`` of secret nodes replaced by ``MASK``.

    The default of a nested model or a list of them (``upstream: Upstream = Upstream(token=...)``) keeps its shape,
    with the values of its secret fields masked.
    """
    if isinstance(schema, list):
        return [redact_schema(item, root) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    root = schema if root is None else root
    secret = is_secret_schema(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if secret and key == "default" and value is not None:
            out[key] = _masked_shape(value)
        elif secret and key == "examples":
            out[key] = [MASK for _ in value] if isinstance(value, list) else MASK
        elif key == "default" and isinstance(value, (dict, list)):
            out[key] = _redact_default(value, {**schema, "$defs": root.get("$defs", {})}, ())
        else:
            out[key] = redact_schema(value, root)
    return out


def _redact_default(value: Any, schema: Mapping[str, Any], path: tuple[str | int, ...]) -> Any:
    if path and is_secret_path(schema, path):
        return _masked_shape(value)
    if isinstance(value, dict):
        return {key: _redact_default(item, schema, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_default(item, schema, (*path, index)) for index, item in enumerate(value)]
    return value
