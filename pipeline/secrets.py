"""Plugin config secrets: which fields are secret, their values, and masking them everywhere.

A config field is secret when its type is pydantic's ``SecretStr``/``SecretBytes`` (JSON Schema
``writeOnly``/``format: password``) or when it is marked ``Field(json_schema_extra={"secret": True})``.

Secret values are registered per process when a blueprint is loaded and when a plugin is built, and
``mask`` replaces them with ``MASK`` in any text: the structlog processor ``mask_secrets`` applies it to
every log line, and the plugin contract applies it to failure reasons before they reach an envelope (and
so the HTTP client). Reports and CLI output render configs through ``redact``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "********"
MIN_MASKED_LENGTH = 4
"""Shorter secret values are not searched for in free text: they would match everywhere. Secret fields are
still always masked when a config is rendered."""
SECRET_KEYWORD = "secret"  # noqa: S105  # the schema keyword that marks a field secret, not a password

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


def _field_is_secret(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, Mapping) and bool(extra.get(SECRET_KEYWORD))


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
    """Every secret string held by a config model (nested models, lists and dicts included)."""
    found: set[str] = set()
    if isinstance(config, (SecretStr, SecretBytes)):
        found.update(_strings(config))
    elif isinstance(config, BaseModel):
        for name in type(config).model_fields:
            value = getattr(config, name, None)
            if _field_is_secret(type(config), name):
                found.update(_strings(value))
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
    for secret in candidates:
        if len(secret) >= MIN_MASKED_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _mask_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(item) for item in value)
    if isinstance(value, BaseException):
        masked = mask(str(value))
        return value if masked == str(value) else f"{type(value).__name__}: {masked}"
    return value


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


def redact_schema(schema: Any) -> Any:
    """A JSON Schema with the ``default`` and ``examples`` of secret nodes replaced by ``MASK``."""
    if isinstance(schema, list):
        return [redact_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    secret = is_secret_schema(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if secret and key == "default" and value is not None:
            out[key] = _masked_shape(value)
        elif secret and key == "examples":
            out[key] = [MASK for _ in value] if isinstance(value, list) else MASK
        else:
            out[key] = redact_schema(value)
    return out
