"""Finds plugin classes: the ``backworks.plugins`` entry-point group (built-ins register there too) and
the folders a blueprint lists under ``plugin_dirs``.

Every class is checked against the contract (``backworks.pipeline.contract.verify``) as it is loaded. A plugin that
cannot be imported or breaks the contract does not stop the others from loading: it is kept as a failure,
raised with its name, file and fixes as soon as anything asks for it, and listed by ``backworks plugins``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from backworks.pipeline import plugindirs
from backworks.pipeline.contract import verify
from backworks.pipeline.errors import PluginContractError, PluginLoadError
from backworks.pipeline.plugin import PluginClass

ENTRY_POINT_GROUP = "backworks.plugins"
BUILTIN_DISTRIBUTION = "backworks"

__all__ = ["ENTRY_POINT_GROUP", "Catalog", "PluginEntry", "catalog", "discover", "get", "verify"]


@dataclass(frozen=True)
class PluginEntry:
    """A discovered plugin class and where it came from."""

    name: str
    cls: PluginClass
    source: str
    """Human-readable origin: the entry point and its distribution, or the plugin folder and file."""
    distribution: str | None = None
    """``name version`` of the installed package providing an entry-point plugin."""
    path: str | None = None
    """File of a plugin found in a plugin folder."""

    @property
    def builtin(self) -> bool:
        """True for the plugins shipped with Backworks itself."""
        return self.distribution is not None and self.distribution.split()[0] == BUILTIN_DISTRIBUTION

    @property
    def origin(self) -> str:
        """Short origin for tables: ``built-in``, the distribution, or the plugin file."""
        if self.builtin:
            return "built-in"
        return self.distribution or self.path or self.source


@dataclass
class Catalog:
    """The plugins available to one process (and one blueprint's plugin folders), by name."""

    plugins: dict[str, PluginEntry] = field(default_factory=dict)
    failures: dict[str, PluginLoadError] = field(default_factory=dict)
    """Plugins that were found but cannot be used, by plugin name (or by file when the name is unknown)."""
    folder_failures: dict[Path, list[PluginLoadError]] = field(default_factory=dict)
    """Import and contract errors per plugin folder."""

    def add(self, entry: PluginEntry) -> None:
        """Add a plugin; a second, different class under the same name makes that name a failure."""
        if entry.name in self.failures:
            return
        known = self.plugins.get(entry.name)
        if known is not None and known.cls is not entry.cls:
            del self.plugins[entry.name]
            self.failures[entry.name] = PluginLoadError(
                f"plugin {entry.name!r} is provided twice: by {known.source} and by {entry.source}; "
                "uninstall or rename one of them"
            )
            return
        self.plugins[entry.name] = entry

    def get(self, name: str) -> PluginClass:
        """The plugin class called ``name``; the error says why it cannot be used or lists what is known."""
        if name in self.failures:
            raise self.failures[name]
        if name in self.plugins:
            return self.plugins[name].cls
        known = sorted(self.plugins)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PluginLoadError(
            f"unknown plugin type {name!r}{hint}; installed: {', '.join(known) or 'none'}. Install a package "
            f"providing it (entry-point group {ENTRY_POINT_GROUP!r}) or list its folder in plugin_dirs"
        )

    def merged(self, other: Catalog) -> Catalog:
        """This catalog with ``other``'s plugins and failures added (a clash becomes a failure)."""
        result = Catalog(dict(self.plugins), dict(self.failures), {**self.folder_failures, **other.folder_failures})
        for name, error in other.failures.items():
            result.failures.setdefault(name, error)
            result.plugins.pop(name, None)
        for entry in other.plugins.values():
            result.add(entry)
        return result


def _source(point: EntryPoint) -> tuple[str, str | None]:
    distribution = f"{point.dist.name} {point.dist.version}" if point.dist else None
    return f"entry point {point.name} = {point.value}" + (f" ({distribution})" if distribution else ""), distribution


@cache
def _installed() -> Catalog:
    found = Catalog()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        source, distribution = _source(point)
        try:
            loaded = point.load()
        except Exception as exc:
            package = point.dist.name if point.dist else "the package providing it"
            found.failures[point.name] = PluginLoadError(
                f"plugin {point.name!r} ({source}) cannot be imported: {type(exc).__name__}: {exc}; "
                f"fix or uninstall {package}"
            )
            continue
        try:
            cls = verify(loaded, source)
        except PluginLoadError as exc:
            found.failures[point.name] = exc
            continue
        if cls.name != point.name:
            found.failures[point.name] = PluginLoadError(
                f"plugin {point.name!r} ({source}): the entry point is named {point.name!r} but the class says "
                f"name = {cls.name!r}; make them equal"
            )
            continue
        found.add(PluginEntry(point.name, cls, source, distribution=distribution))
    return found


def catalog(plugin_dirs: Iterable[Path] = ()) -> Catalog:
    """Installed plugins plus those in ``plugin_dirs`` (absolute paths)."""
    result = _installed()
    for directory in plugin_dirs:
        entries, errors = plugindirs.scan(directory)
        local = Catalog(folder_failures={directory: list(errors)} if errors else {})
        for error in errors:
            if isinstance(error, PluginContractError):
                local.failures[error.plugin] = error
        for entry_name, cls, file in entries:
            local.add(PluginEntry(entry_name, cls, f"plugin folder {directory} ({Path(file).name})", path=file))
        result = result.merged(local)
    return result


def discover() -> dict[str, PluginEntry]:
    """All installed (entry-point) plugins that load and follow the contract, by name."""
    return dict(_installed().plugins)


def get(name: str) -> PluginClass:
    """The installed plugin class called ``name``; the error says what is wrong or lists what is installed."""
    return _installed().get(name)


def refresh() -> None:
    """Forget what was discovered (after installing or removing a plugin package in this process)."""
    _installed.cache_clear()
    plugindirs.scan.cache_clear()
