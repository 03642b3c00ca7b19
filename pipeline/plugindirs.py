"""Plugin folders: the ``plugin_dirs`` of a blueprint, for plugins that are not (yet) packaged.

Every ``*.py`` file and every package (a folder with ``__init__.py``) directly inside a plugin folder is
imported, except names starting with ``_`` or ``.``. The plugin classes it defines (with their own ``name``,
or implementing a hook) are checked against the contract. Import errors and contract errors are returned
with the file and line, never raised, so one broken file does not hide the others.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import traceback
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from backworks.pipeline.contract import verify
from backworks.pipeline.errors import PluginLoadError
from backworks.pipeline.plugin import FRAMEWORK_CLASSES, Plugin, PluginClass

MODULE_PREFIX = "backworks_plugin_dir"

Found = tuple[str, PluginClass, str]
"""(plugin name, class, file)."""


def module_name(directory: Path, stem: str) -> str:
    """A unique, importable module name for a file of a plugin folder."""
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:10]  # noqa: S324  # a name, not security
    return f"{MODULE_PREFIX}_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', stem)}"


def _candidates(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if (path.is_file() and path.suffix == ".py") or (path.is_dir() and (path / "__init__.py").is_file()):
            found.append(path)
    return found


def _where(exc: BaseException, directory: Path) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(directory))]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(directory)


def _import(directory: Path, path: Path) -> ModuleType:
    return import_private(module_name(directory, path.stem), path)


def import_private(name: str, path: Path) -> ModuleType:
    """Import the module file or package folder ``path`` under the private name ``name`` (once per process).

    A private name keeps a user's ``plugins/`` or ``json.py`` from shadowing, or being shadowed by, any other
    module; a module that fails to import leaves nothing of itself in ``sys.modules``.
    """
    if name in sys.modules:
        return sys.modules[name]
    if path.is_dir():
        init = path / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]
        raise
    return module


def _plugin_classes(module: ModuleType) -> list[type[Plugin[Any]]]:
    classes = []
    for value in vars(module).values():
        if not (inspect.isclass(value) and issubclass(value, Plugin)) or value in FRAMEWORK_CLASSES:
            continue
        if not (value.__module__ == module.__name__ or value.__module__.startswith(f"{module.__name__}.")):
            continue
        own = vars(value)
        if "name" in own or any(spec.name in own for spec in value.HOOKS):
            classes.append(value)
    return classes


@cache
def scan(directory: Path) -> tuple[tuple[Found, ...], tuple[PluginLoadError, ...]]:
    """Plugins defined in one folder, and every error met while loading them."""
    if not directory.is_dir():
        return (), (PluginLoadError(f"plugin folder {directory} does not exist or is not a directory"),)
    found: list[Found] = []
    errors: list[PluginLoadError] = []
    for path in _candidates(directory):
        try:
            module = _import(directory, path)
        except Exception as exc:
            detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            errors.append(
                PluginLoadError(
                    f"cannot import plugin file {_where(exc, directory)}: {type(exc).__name__}: {detail}; fix the file "
                    "or move it out of the plugin folder"
                )
            )
            continue
        file = str(path / "__init__.py" if path.is_dir() else path)
        for cls in _plugin_classes(module):
            try:
                verified = verify(cls, f"plugin folder {directory}")
            except PluginLoadError as exc:
                errors.append(exc)
                continue
            found.append((verified.name, verified, file))
    return tuple(found), tuple(errors)
