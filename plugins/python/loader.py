"""Finds a ``python`` handler's function: ``"module:function"`` in the blueprint's folder, its ``plugin_dirs``, or
the installed packages (in that order).

A module found in a folder is imported under a private name (``backworks_user_<folder digest>_<name>``), so a
user's ``json.py`` or ``backworks.py`` never replaces the standard library's or ours in ``sys.modules``. While it
is imported, its folder is at the *end* of ``sys.path`` (sibling modules it imports at the top are found; the
standard library and installed packages still win) and is removed afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from backworks.pipeline.errors import PipelineError
from backworks.pipeline.plugindirs import import_private

__all__ = ["FunctionNotUsable", "Target", "load_target"]

MODULE_PREFIX = "backworks_user"
FUNCTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class FunctionNotUsable(PipelineError):
    """The configured function cannot be imported or called as a handler (the message says why and what to do)."""


@dataclass(frozen=True)
class Target:
    """A handler function, ready to call."""

    spec: str
    """``module:function`` as configured."""
    module: ModuleType
    function: Callable[..., Any]
    is_async: bool


def _private_name(folder: Path, top: str) -> str:
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]  # noqa: S324  # a name, not security
    return f"{MODULE_PREFIX}_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', top)}"


@contextlib.contextmanager
def _folder_last_on_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.append(entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _where(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import_from_folder(folder: Path, top: str, rest: str) -> ModuleType:
    name = _private_name(folder, top)
    with _folder_last_on_path(folder):
        package = folder / top
        module = import_private(name, package if (package / "__init__.py").is_file() else folder / f"{top}.py")
        return importlib.import_module(f"{name}.{rest}") if rest else module


def _find_module(dotted: str, folders: Sequence[Path]) -> ModuleType:
    top, _, rest = dotted.partition(".")
    for folder in folders:
        if (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file():
            return _import_from_folder(folder, top, rest)
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (dotted == exc.name or dotted.startswith(f"{exc.name}.")):
            searched = ", ".join(str(folder) for folder in folders) or "no folder"
            raise FunctionNotUsable(
                f"module {dotted!r} not found in {searched} nor in the installed packages; put {top}.py next to the "
                "blueprint, list its folder in plugin_dirs, or install it"
            ) from None
        raise


def _check_signature(spec: str, function: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C callable without a signature: it is called as is
    try:
        signature.bind(object())
    except TypeError:
        raise FunctionNotUsable(
            f"function {spec} must take exactly one positional parameter (the request), but its signature is "
            f"{signature}; write it as `def {spec.partition(':')[2]}(request):`"
        ) from None


def load_target(spec: str, folders: Sequence[Path]) -> Target:
    """Import ``module:function`` (see the module docstring); ``FunctionNotUsable`` says what is wrong."""
    dotted, _, attribute = spec.partition(":")
    try:
        module = _find_module(dotted, folders)
    except FunctionNotUsable:
        raise
    except Exception as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise FunctionNotUsable(
            f"cannot import module {dotted!r}{_where(exc)}: {type(exc).__name__}: {detail}; fix the module"
        ) from exc
    function = getattr(module, attribute, None)
    where = getattr(module, "__file__", None) or dotted
    if function is None:
        defined = sorted(
            name for name, value in vars(module).items() if inspect.isfunction(value) and not name.startswith("_")
        )
        raise FunctionNotUsable(
            f"module {dotted!r} ({where}) has no function {attribute!r}; it defines: {', '.join(defined) or 'none'}"
        )
    if not callable(function):
        raise FunctionNotUsable(f"{spec} ({where}) is a {type(function).__name__}, not a function")
    _check_signature(spec, function)
    is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(type(function).__call__)
    return Target(spec, module, function, is_async)
