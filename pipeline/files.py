"""Files a plugin config refers to (``body: {file: schemas/note.json}``), read relative to the blueprint's folder.

Blueprint validation hands the config model a ``ConfigContext`` (its ``blueprint_dir``) as pydantic validation
context (see ``backworks.pipeline.configs.validate_config``). A config's field validator
calls ``read_data`` or ``read_text`` with its ``ValidationInfo``: a relative path is taken from that folder (the
working directory when a config is validated outside a blueprint), and a file that cannot be read or parsed is
a ``ValueError``, so it is reported like any other config problem, with the blueprint's file, line and pointer.
Every process validates the blueprint from its file, so the referenced files must travel with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationInfo

from backworks.pipeline.configs import ConfigContext

__all__ = ["as_file_ref", "read_data", "read_text", "resolve"]


def as_file_ref(value: Any) -> str | None:
    """The path when ``value`` is a file reference (a mapping with the single key ``file``), else ``None``."""
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        return value["file"]
    return None


def resolve(path: str, info: ValidationInfo | None = None) -> Path:
    """``path`` made absolute: relative paths start from the blueprint's folder (or the working directory)."""
    context = info.context if info is not None else None
    base = context.blueprint_dir if isinstance(context, ConfigContext) else Path.cwd()
    return (base / Path(path).expanduser()).resolve()


def read_text(path: str, info: ValidationInfo | None = None) -> tuple[Path, str]:
    """The resolved path and text of the file ``path``; ``ValueError`` saying which file and why when unreadable."""
    resolved = resolve(path, info)
    try:
        return resolved, resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read file {path!r} (resolved to {resolved}): {reason}") from None


def read_data(path: str, info: ValidationInfo | None = None) -> tuple[Path, Any]:
    """The resolved path and parsed content of a JSON or YAML file (by suffix; YAML otherwise, a superset)."""
    resolved, text = read_text(path, info)
    try:
        if resolved.suffix.lower() == ".json":
            return resolved, json.loads(text)
        return resolved, yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"file {path!r} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"file {path!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
