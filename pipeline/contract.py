"""Checks a plugin class against the contract when it is loaded, never at the first request.

Every problem of a class is collected and raised at once as ``PluginContractError`` with the plugin's
name, the file and line of the class, where it was found, and what to change (like pluggy's
``_verify_hook``).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel

from backworks.contracts.names import NAME_PATTERN
from backworks.pipeline.configs import schema_problems
from backworks.pipeline.errors import PluginContractError
from backworks.pipeline.plugin import (
    CATEGORY_BASES,
    FRAMEWORK_CLASSES,
    LIFECYCLE_HOOKS,
    Category,
    HookSpec,
    Plugin,
    PluginClass,
    implements,
)

RELEASE_PARTS = 3
"""MAJOR.MINOR.PATCH: a plugin version names all three, like semver."""
PLUGIN_NAME = re.compile(NAME_PATTERN)
ANY_VERSION = ("", "*")
MAX_EXECUTION_TIME_LIMIT = 600.0
"""Seconds; the blueprint's ``timeout_ms`` allows at most ten minutes too."""


def location(cls: type[Any]) -> str:
    """``file:line`` of a class, or its module when the source is not available."""
    try:
        file = inspect.getsourcefile(cls)
        _, line = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return f"module {cls.__module__}"
    return f"{file}:{line}" if file else f"module {cls.__module__}"


def parse_version(text: str) -> Version:
    """A plugin version as a comparable ``packaging`` version (semver prereleases such as ``1.2.0-rc.1`` parse)."""
    return Version(text)


def version_problem(version: object) -> str | None:
    """What is wrong with a plugin's ``version``, or None.

    ``packaging`` parses it, as it is what compares it with the dependency constraints of other plugins; the
    one rule on top is that the release names MAJOR.MINOR.PATCH.
    """
    example = 'e.g. version = "1.2.0" or "1.2.0-rc.1"'
    if not isinstance(version, str):
        return f"version {version!r} is not a string: write MAJOR.MINOR.PATCH, {example}"
    try:
        parsed = parse_version(version)
    except InvalidVersion:
        return f"version {version!r} is not semver (it cannot be compared with constraints): {example}"
    if len(parsed.release) != RELEASE_PARTS:
        return f"version {version!r} is not semver: write MAJOR.MINOR.PATCH, {example}"
    return None


def parse_constraint(text: str) -> SpecifierSet:
    """A dependency constraint (``">=1.0,<2"``; empty or ``*`` for any version)."""
    return SpecifierSet("" if text.strip() in ANY_VERSION else text, prereleases=True)


def _declared_by_plugin(cls: type[Any], attribute: str) -> bool:
    """True when ``attribute`` comes from the plugin's own classes, not from a framework base."""
    for klass in cls.__mro__:
        if attribute in vars(klass):
            return klass not in FRAMEWORK_CLASSES
    return False


def _check_metadata(cls: type[Plugin[Any]], problems: list[str]) -> None:
    version = getattr(cls, "version", None)
    if not _declared_by_plugin(cls, "version"):
        problems.append('no `version`: add a semver class attribute, e.g. version = "1.0.0"')
    elif problem := version_problem(version):
        problems.append(problem)
    description = getattr(cls, "description", None)
    if not _declared_by_plugin(cls, "description") or not isinstance(description, str) or not description.strip():
        problems.append('no `description`: add a one-line class attribute, e.g. description = "Checks API keys."')
    _check_dependencies(cls, problems)
    for attribute, example in (("capabilities", "['auth.api-key']"), ("requires_capabilities", "['principal']")):
        values = getattr(cls, attribute, ())
        if isinstance(values, str) or not isinstance(values, (Sequence, set, frozenset)):
            problems.append(f"{attribute} must be a list of strings, e.g. {example}, got {values!r}")
        elif not all(isinstance(item, str) and item.strip() for item in values):
            problems.append(f"{attribute} must be non-empty strings, got {list(values)!r}")
    limit = getattr(cls, "max_execution_time", None)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit <= MAX_EXECUTION_TIME_LIMIT:
        problems.append(
            f"max_execution_time must be a number of seconds in (0, {MAX_EXECUTION_TIME_LIMIT:.0f}], got {limit!r}"
        )
    if not isinstance(getattr(cls, "is_critical", None), bool):
        problems.append(f"is_critical must be True or False, got {cls.is_critical!r}")
    priority = getattr(cls, "priority", None)
    if isinstance(priority, bool) or not isinstance(priority, int):
        problems.append(f"priority must be an integer (higher runs earlier), got {priority!r}")


def _check_dependencies(cls: type[Plugin[Any]], problems: list[str]) -> None:
    dependencies = getattr(cls, "dependencies", {})
    if not isinstance(dependencies, Mapping):
        problems.append(f'dependencies must map plugin names to version constraints, e.g. {{"api-key": ">=1.0,<2"}}, '
                        f"got {dependencies!r}")  # fmt: skip
        return
    for name, constraint in dependencies.items():
        if not isinstance(name, str) or not PLUGIN_NAME.match(name):
            problems.append(f"dependency name {name!r} is not a plugin name (lower-case letters, digits, '-', '_')")
        elif name == getattr(cls, "name", None):
            problems.append(f"plugin depends on itself ({name!r}): remove it from dependencies")
        if not isinstance(constraint, str):
            problems.append(f"constraint of dependency {name!r} must be a string like '>=1.0,<2', got {constraint!r}")
            continue
        try:
            parse_constraint(constraint)
        except InvalidSpecifier:
            problems.append(
                f"constraint {constraint!r} of dependency {name!r} is not a version specifier: use e.g. '>=1.0,<2'"
            )


def _signature_problem(cls: type[Any], spec: HookSpec) -> str | None:
    function = getattr(cls, spec.name)
    if not inspect.iscoroutinefunction(function):
        return f"`{spec.name}` must be a coroutine: write `{spec.signature}`"
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    expected = 2 if spec.takes_envelope else 1
    if len(parameters) != expected or any(p.kind not in positional for p in parameters):
        shown = ", ".join(("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "") + p.name
                          for p in parameters)  # fmt: skip
        return f"`{spec.name}({shown})` has the wrong parameters: write `{spec.signature}`"
    return None


def _check_hooks(cls: type[Plugin[Any]], category: Category, problems: list[str]) -> None:
    own = {spec.name for spec in cls.HOOKS}
    for spec in (*cls.HOOKS, *LIFECYCLE_HOOKS):
        if _defined_in_plugin(cls, spec.name):
            problem = _signature_problem(cls, spec)
            if problem:
                problems.append(problem)
    missing = [hook for hook in cls.REQUIRED if not implements(cls, hook)]
    if missing and (not cls.REQUIRES_ANY or len(missing) == len(cls.REQUIRED)):
        wanted = " or ".join(f"`{spec.signature}`" for spec in cls.HOOKS if spec.name in missing)
        members = [name for name in vars(cls) if callable(vars(cls)[name]) and not name.startswith("_")]
        hints = sorted({match for hook in missing for match in difflib.get_close_matches(hook, members, n=1)})
        hint = f" (found {', '.join(f'`{h}`' for h in hints)}: a misspelling?)" if hints else ""
        problems.append(f"a {category.value} plugin must implement {wanted}{hint}")
    for other, base in CATEGORY_BASES.items():
        if other is category:
            continue
        for spec in base.HOOKS:
            if spec.name not in own and _defined_in_plugin(cls, spec.name):
                problems.append(
                    f"`{spec.name}` is a {other.value} hook, which a {category.value} plugin never calls: "
                    f"subclass {base.__name__} instead, or rename the method"
                )
    if _defined_in_plugin(cls, "run"):
        problems.append("do not override `run`: the stage host calls it to dispatch to your hooks; implement the hooks")
    for runtime_method in ("bind", "kv"):
        if _defined_in_plugin(cls, runtime_method):
            problems.append(
                f"do not override `{runtime_method}`: the runtime provides it (call `await self.kv(bucket)` for KV)"
            )
    if cls.phases_set_by_hand:
        problems.append("do not set `phases`: it is derived from the hooks the class implements")


def _defined_in_plugin(cls: type[Any], name: str) -> bool:
    return any(name in vars(klass) for klass in cls.__mro__ if klass not in FRAMEWORK_CLASSES and klass is not object)


def verify(cls: object, source: str, *, check_metaschema: bool = True) -> PluginClass:
    """Check ``cls`` follows the plugin contract; raise ``PluginContractError`` with every problem and fix.

    ``check_metaschema=False`` trusts that the config's JSON Schema is valid 2020-12 (the built-in plugins: a test
    checks theirs); every other check still runs.
    """
    if not (inspect.isclass(cls) and issubclass(cls, Plugin)) or cls in FRAMEWORK_CLASSES:
        raise PluginContractError(
            getattr(cls, "__name__", repr(cls)),
            location(cls) if inspect.isclass(cls) else "",
            source,
            [f"{cls!r} is not a plugin: subclass one of {', '.join(b.__name__ for b in CATEGORY_BASES.values())}"],
        )
    problems: list[str] = []
    name = vars(cls).get("name") if "name" in vars(cls) else getattr(cls, "name", None)
    if not isinstance(name, str) or not PLUGIN_NAME.match(name):
        problems.append(
            f"`name` must be a plugin name (lower-case letters, digits, '-', '_'; at most 63), got {name!r}: "
            f'add e.g. name = "{re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()}"'
        )
    category = getattr(cls, "category", None)
    base = CATEGORY_BASES.get(category) if isinstance(category, Category) else None
    if base is None or not issubclass(cls, base):
        problems.append(f"subclass one of {', '.join(b.__name__ for b in CATEGORY_BASES.values())} (not Plugin)")
    config = getattr(cls, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, BaseModel)):
        problems.append(f"`Config` must be a pydantic BaseModel subclass, got {config!r}")
    else:
        problems += schema_problems(config, check_metaschema=check_metaschema)
    _check_metadata(cls, problems)
    if base is not None and isinstance(category, Category) and issubclass(cls, base):
        _check_hooks(cls, category, problems)
    if problems:
        raise PluginContractError(name if isinstance(name, str) else cls.__name__, location(cls), source, problems)
    return cls
