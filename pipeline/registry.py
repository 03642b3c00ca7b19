"""Finds plugin classes: the ``backworks.plugins`` entry-point group (built-ins register there too) and
the folders a blueprint lists under ``plugin_dirs``.

Every class is checked against the contract (``backworks.pipeline.contract.verify``) as it is loaded. A plugin that
cannot be imported or breaks the contract does not stop the others from loading: it is kept as a failure,
raised with its name, file and fixes as soon as anything asks for it, and listed by ``backworks plugins``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import Distribution, EntryPoint, entry_points
from pathlib import Path

from backworks.pipeline import plugindirs
from backworks.pipeline.contract import verify
from backworks.pipeline.errors import PluginContractError, PluginLoadError
from backworks.pipeline.plugin import PluginClass

ENTRY_POINT_GROUP = "backworks.plugins"
BUILTIN_DISTRIBUTION = "backworks"

__all__ = ["ENTRY_POINT_GROUP", "Catalog", "Classes", "Failures", "PluginEntry", "catalog", "discover", "get", "verify"]


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
    """The plugins available to one process (and one blueprint's plugin folders), by name.

    Installed plugins are imported and verified when first asked for by name (``get``, ``entry``, ``in``), so
    validating or serving a blueprint imports only the plugins it uses; ``plugins`` and ``failures`` load
    everything (for listings).
    """

    _plugins: dict[str, PluginEntry] = field(default_factory=dict)
    _failures: dict[str, PluginLoadError] = field(default_factory=dict)
    folder_failures: dict[Path, list[PluginLoadError]] = field(default_factory=dict)
    """Import and contract errors per plugin folder."""
    _pending: dict[str, list[EntryPoint]] = field(default_factory=dict)
    """Entry points not imported yet, by plugin name."""

    @property
    def plugins(self) -> dict[str, PluginEntry]:
        """Every plugin that loads and follows the contract, by name (imports all pending ones)."""
        self._load_all()
        return self._plugins

    @property
    def failures(self) -> dict[str, PluginLoadError]:
        """Plugins that were found but cannot be used, by plugin name (imports all pending ones)."""
        self._load_all()
        return self._failures

    def _load(self, name: str) -> None:
        for point in self._pending.pop(name, []):
            self._take(point.name, _load_point(point))

    def _load_all(self) -> None:
        for name in list(self._pending):
            self._load(name)

    def _take(self, name: str, loaded: PluginEntry | PluginLoadError) -> None:
        if isinstance(loaded, PluginLoadError):
            self._plugins.pop(name, None)
            self._failures.setdefault(name, loaded)
        else:
            self.add(loaded)

    def add(self, entry: PluginEntry) -> None:
        """Add a plugin; a second, different class under the same name makes that name a failure."""
        self._load(entry.name)
        if entry.name in self._failures:
            return
        known = self._plugins.get(entry.name)
        if known is not None and known.cls is not entry.cls:
            del self._plugins[entry.name]
            self._failures[entry.name] = PluginLoadError(
                f"plugin {entry.name!r} is provided twice: by {known.source} and by {entry.source}; "
                "uninstall or rename one of them"
            )
            return
        self._plugins[entry.name] = entry

    def entry(self, name: str) -> PluginEntry | None:
        """The usable plugin called ``name``, or None (unknown or broken)."""
        self._load(name)
        return self._plugins.get(name)

    def failure(self, name: str) -> PluginLoadError | None:
        """Why the plugin called ``name`` cannot be used, or None (it loads, or nothing has that name)."""
        self._load(name)
        return self._failures.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.entry(name) is not None

    def get(self, name: str) -> PluginClass:
        """The plugin class called ``name``; the error says why it cannot be used or lists what is known."""
        failure = self.failure(name)
        if failure is not None:
            raise failure
        found = self._plugins.get(name)
        if found is not None:
            return found.cls
        known = sorted(self.plugins)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PluginLoadError(
            f"unknown plugin type {name!r}{hint}; installed: {', '.join(known) or 'none'}. Install a package "
            f"providing it (entry-point group {ENTRY_POINT_GROUP!r}) or list its folder in plugin_dirs"
        )

    def merged(self, other: Catalog) -> Catalog:
        """This catalog with ``other``'s plugins and failures added (a clash becomes a failure)."""
        result = Catalog(
            dict(self._plugins),
            dict(self._failures),
            {**self.folder_failures, **other.folder_failures},
            {name: list(points) for name, points in self._pending.items()},
        )
        for name, error in other.failures.items():
            result._load(name)
            result._failures.setdefault(name, error)
            result._plugins.pop(name, None)
        for entry in other.plugins.values():
            result.add(entry)
        return result


class Classes(Mapping[str, PluginClass]):
    """A catalog's usable plugin classes by name, importing each one when first looked up."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __getitem__(self, name: str) -> PluginClass:
        entry = self._catalog.entry(name)
        if entry is None:
            raise KeyError(name)
        return entry.cls

    def __contains__(self, name: object) -> bool:
        return name in self._catalog

    def __iter__(self) -> Iterator[str]:
        return iter(self._catalog.plugins)

    def __len__(self) -> int:
        return len(self._catalog.plugins)


class Failures(Mapping[str, PluginLoadError]):
    """A catalog's failures by plugin name, importing each plugin when first looked up."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __getitem__(self, name: str) -> PluginLoadError:
        failure = self._catalog.failure(name)
        if failure is None:
            raise KeyError(name)
        return failure

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._catalog.failure(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._catalog.failures)

    def __len__(self) -> int:
        return len(self._catalog.failures)


@cache
def _distribution(dist: Distribution) -> str:
    """``name version`` of an installed distribution; its metadata is parsed once, not once per entry point."""
    metadata = dist.metadata
    return f"{metadata['Name']} {metadata['Version']}"


def _source(point: EntryPoint) -> tuple[str, str | None]:
    distribution = _distribution(point.dist) if point.dist else None
    return f"entry point {point.name} = {point.value}" + (f" ({distribution})" if distribution else ""), distribution


def _load_point(point: EntryPoint) -> PluginEntry | PluginLoadError:
    """Import one entry point and check its class against the contract."""
    source, distribution = _source(point)
    try:
        loaded = point.load()
    except Exception as exc:
        package = point.dist.name if point.dist else "the package providing it"
        return PluginLoadError(
            f"plugin {point.name!r} ({source}) cannot be imported: {type(exc).__name__}: {exc}; "
            f"fix or uninstall {package}"
        )
    builtin = distribution is not None and distribution.split()[0] == BUILTIN_DISTRIBUTION
    try:
        # A built-in's config schema is checked against the metaschema by the test suite, not at every start.
        cls = verify(loaded, source, check_metaschema=not builtin)
    except PluginLoadError as exc:
        return exc
    if cls.name != point.name:
        return PluginLoadError(
            f"plugin {point.name!r} ({source}): the entry point is named {point.name!r} but the class says "
            f"name = {cls.name!r}; make them equal"
        )
    return PluginEntry(point.name, cls, source, distribution=distribution)


@cache
def _installed() -> Catalog:
    found = Catalog()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found._pending.setdefault(point.name, []).append(point)
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
