"""Finds plugin classes: the ``backworks.plugins`` entry-point group (built-ins register there too).

Loading checks the class against the contract so that a broken plugin fails here, with its name and
what to fix, and never at the first request.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from pydantic import BaseModel

from pipeline.errors import PluginLoadError
from pipeline.plugin import Category, Handler, Plugin, PluginClass, RequestProcessor, ResponseEnhancer

ENTRY_POINT_GROUP = "backworks.plugins"
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
CATEGORY_HOOKS: dict[Category, tuple[type[Plugin[BaseModel]], str]] = {
    Category.REQUEST_PROCESSOR: (RequestProcessor, "process_request"),
    Category.RESPONSE_ENHANCER: (ResponseEnhancer, "enhance_response"),
    Category.HANDLER: (Handler, "handle"),
}


@dataclass(frozen=True)
class PluginEntry:
    """A discovered plugin class and where it came from."""

    name: str
    cls: PluginClass
    source: str


def verify(cls: object, source: str) -> PluginClass:
    """Check ``cls`` follows the plugin contract; raise ``PluginLoadError`` saying what to fix."""
    where = f"plugin from {source}"
    if not (inspect.isclass(cls) and issubclass(cls, Plugin)):
        raise PluginLoadError(f"{where}: {cls!r} is not a subclass of pipeline.plugin.Plugin")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginLoadError(f"{where}: class {cls.__name__} has no `name` class attribute")
    if not SEMVER.match(str(getattr(cls, "version", ""))):
        raise PluginLoadError(f"plugin {name!r} ({source}): version {cls.version!r} is not semver (e.g. '1.2.0')")
    category = getattr(cls, "category", None)
    if category not in CATEGORY_HOOKS:
        raise PluginLoadError(
            f"plugin {name!r} ({source}): subclass one of RequestProcessor, ResponseEnhancer, Handler"
        )
    base, hook = CATEGORY_HOOKS[category]
    implementation = getattr(cls, hook)
    if implementation is getattr(base, hook):
        raise PluginLoadError(
            f"plugin {name!r} ({source}): category {category.value} requires `async def {hook}(self, envelope)`"
        )
    if not inspect.iscoroutinefunction(implementation):
        raise PluginLoadError(f"plugin {name!r} ({source}): `{hook}` must be `async def`")
    if len(inspect.signature(implementation).parameters) != 2:
        raise PluginLoadError(f"plugin {name!r} ({source}): `{hook}` must take exactly (self, envelope)")
    if not (inspect.isclass(cls.Config) and issubclass(cls.Config, BaseModel)):
        raise PluginLoadError(f"plugin {name!r} ({source}): `Config` must be a pydantic BaseModel subclass")
    if not (isinstance(cls.max_execution_time, (int, float)) and cls.max_execution_time > 0):
        raise PluginLoadError(f"plugin {name!r} ({source}): max_execution_time must be a positive number of seconds")
    return cls


@cache
def discover() -> dict[str, PluginEntry]:
    """All installed plugins by name."""
    found: dict[str, PluginEntry] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {point.value}" + (f" ({point.dist.name})" if point.dist else "")
        try:
            loaded = point.load()
        except Exception as exc:
            raise PluginLoadError(f"plugin {point.name!r}: cannot import {point.value}: {exc}") from exc
        cls = verify(loaded, source)
        if cls.name != point.name:
            raise PluginLoadError(
                f"plugin {point.name!r} ({source}): entry point name differs from class name {cls.name!r}"
            )
        if point.name in found and found[point.name].cls is not cls:
            raise PluginLoadError(f"plugin {point.name!r} is provided twice: {found[point.name].source} and {source}")
        found[point.name] = PluginEntry(point.name, cls, source)
    return found


def get(name: str) -> PluginClass:
    """The plugin class called ``name``; the error lists what is installed."""
    plugins = discover()
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise PluginLoadError(f"unknown plugin type {name!r}; installed: {known}")
    return plugins[name].cls
