"""Loads a blueprint file and validates it as a whole: structure, references, every plugin's config.

Every problem is collected (not just the first) with the file, line, column, JSON pointer and plugin
instance, so ``backworks validate`` can report them all at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from starlette.routing import compile_path

from contracts.blueprint import Blueprint, PluginInstance, handler_instance
from contracts.envelope import Stage
from contracts.errors import BlueprintError, ConfigIssue
from contracts.names import Phase
from pipeline import registry
from pipeline.errors import PluginLoadError
from pipeline.plugin import Category, PluginClass

Position = tuple[int, int]
_PARAM = re.compile(r"\{[^}:]+(:[^}]+)?\}")
"""A path parameter; two templates differing only in parameter names match the same requests."""


@dataclass(frozen=True)
class ResolvedInstance:
    """A plugin instance with its class and validated config."""

    name: str
    spec: PluginInstance
    cls: PluginClass
    config: BaseModel

    @property
    def critical(self) -> bool:
        return self.spec.critical if self.spec.critical is not None else self.cls.is_critical

    @property
    def timeout(self) -> float:
        """Seconds one hook call may take."""
        return self.spec.timeout_ms / 1000 if self.spec.timeout_ms else float(self.cls.max_execution_time)

    def stage(self, phase: Phase) -> Stage:
        return Stage(instance=self.name, phase=phase, critical=self.critical, timeout_ms=round(self.timeout * 1000))


@dataclass(frozen=True)
class LoadedBlueprint:
    """A blueprint that passed every check."""

    path: Path
    model: Blueprint
    instances: dict[str, ResolvedInstance]

    def itinerary(self, endpoint: str) -> list[Stage]:
        """Ordered stages of an endpoint: request processors, the handler, then enhancers in reverse."""
        chain = [self.instances[name] for name in self.model.chain(endpoint)]
        stages = [item.stage(Phase.REQUEST) for item in chain if Phase.REQUEST in item.cls.phases]
        stages.append(self.instances[handler_instance(endpoint)].stage(Phase.REQUEST))
        stages.extend(item.stage(Phase.RESPONSE) for item in reversed(chain) if Phase.RESPONSE in item.cls.phases)
        return stages


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer(parts: tuple[Any, ...] | list[Any]) -> str:
    return "".join(f"/{escape(str(part))}" for part in parts)


def _positions(node: yaml.Node, prefix: str, out: dict[str, Position]) -> None:
    out.setdefault(prefix, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{prefix}/{escape(str(key.value))}"
            out[f"{child}#key"] = (key.start_mark.line + 1, key.start_mark.column + 1)
            _positions(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, f"{prefix}/{index}", out)


class _Report:
    def __init__(self, file: str, positions: dict[str, Position]) -> None:
        self.file = file
        self.positions = positions
        self.issues: list[ConfigIssue] = []

    def add(self, at: str, message: str, plugin: str | None = None, key: bool = False) -> None:
        position = self.positions.get(f"{at}#key") if key else None
        probe = at
        while position is None:
            position = self.positions.get(probe)
            if position is None:
                if not probe:
                    break
                probe = probe.rsplit("/", 1)[0]
        line, column = position if position else (None, None)
        self.issues.append(ConfigIssue(self.file, at, message, line, column, plugin))

    def add_validation(self, base: str, error: ValidationError, plugin: str | None = None) -> None:
        for item in error.errors():
            loc = list(item["loc"])
            is_key = item["type"] == "extra_forbidden" or (bool(loc) and loc[-1] == "[key]")
            loc = [part for part in loc if part != "[key]"]
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
            self.add(base + pointer(loc), message, plugin, key=is_key)


def _read(path: Path) -> tuple[Any, dict[str, Position]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BlueprintError([ConfigIssue(str(path), "", f"cannot read blueprint: {exc.strerror or exc}")]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise BlueprintError([ConfigIssue(str(path), "", f"YAML syntax error: {problem}", line, column)]) from exc
    except yaml.YAMLError as exc:
        raise BlueprintError([ConfigIssue(str(path), "", f"YAML error: {exc}")]) from exc
    positions: dict[str, Position] = {}
    if node is not None:
        _positions(node, "", positions)
    return data, positions


def _resolve(report: _Report, name: str, spec: PluginInstance, at: str) -> ResolvedInstance | None:
    try:
        cls = registry.get(spec.type)
    except PluginLoadError as exc:
        report.add(f"{at}/type", str(exc), name)
        return None
    try:
        config = cls.Config.model_validate(spec.config)
    except ValidationError as exc:
        report.add_validation(f"{at}/config", exc, name)
        return None
    return ResolvedInstance(name, spec, cls, config)


def _check_references(report: _Report, model: Blueprint, resolved: dict[str, ResolvedInstance]) -> None:
    lists = [("/defaults/plugins", model.defaults.plugins)]
    lists += [(f"/endpoints/{escape(name)}/plugins", endpoint.plugins) for name, endpoint in model.endpoints.items()]
    for at, names in lists:
        for index, name in enumerate(names):
            if name not in model.plugins:
                known = ", ".join(sorted(model.plugins)) or "none"
                report.add(f"{at}/{index}", f"unknown plugin instance {name!r}; declared under /plugins: {known}")
            elif name in resolved and resolved[name].cls.category is Category.HANDLER:
                report.add(f"{at}/{index}", f"{name!r} is a handler; use it as an endpoint's `handler:`", name)
    for endpoint in model.endpoints:
        handler = resolved.get(handler_instance(endpoint))
        if handler is not None and handler.cls.category is not Category.HANDLER:
            report.add(
                f"/endpoints/{escape(endpoint)}/handler/type",
                f"plugin {handler.cls.name!r} is a {handler.cls.category.value}, not a handler",
                handler.name,
            )


def _check_routes(report: _Report, model: Blueprint) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, endpoint in model.endpoints.items():
        at = f"/endpoints/{escape(name)}"
        try:
            compile_path(endpoint.path)
        except (AssertionError, ValueError, KeyError) as exc:
            report.add(f"{at}/path", f"invalid path template: {exc}")
            continue
        shape = _PARAM.sub(lambda m: "{" + (m.group(1) or ":str") + "}", endpoint.path)
        for method in endpoint.methods:
            other = seen.get((shape, method))
            if other:
                report.add(f"{at}/path", f"{method} {endpoint.path} is already served by endpoint {other!r}")
            seen[(shape, method)] = name
        if handler_instance(name) in model.plugins:
            report.add(
                at, f"plugin instance {handler_instance(name)!r} clashes with this endpoint's handler name", key=True
            )


def validate(data: Any, file: str, positions: dict[str, Position] | None = None) -> LoadedBlueprint:
    """Validate already-parsed blueprint data; raise ``BlueprintError`` with every issue."""
    report = _Report(file, positions or {})
    if not isinstance(data, dict):
        report.add("", "a blueprint must be a YAML mapping with at least `name` and `endpoints`")
        raise BlueprintError(report.issues)
    try:
        model = Blueprint.model_validate(data)
    except ValidationError as exc:
        report.add_validation("", exc)
        raise BlueprintError(report.issues) from None
    resolved: dict[str, ResolvedInstance] = {}
    for name, spec in model.plugins.items():
        item = _resolve(report, name, spec, f"/plugins/{escape(name)}")
        if item:
            resolved[name] = item
    for endpoint_name, endpoint in model.endpoints.items():
        instance = handler_instance(endpoint_name)
        item = _resolve(report, instance, endpoint.handler, f"/endpoints/{escape(endpoint_name)}/handler")
        if item:
            resolved[instance] = item
    _check_references(report, model, resolved)
    _check_routes(report, model)
    if report.issues:
        raise BlueprintError(report.issues)
    return LoadedBlueprint(Path(file), model, resolved)


def load(path: str | Path) -> LoadedBlueprint:
    """Read and validate a blueprint file; raise ``BlueprintError`` listing every problem."""
    path = Path(path)
    data, positions = _read(path)
    return validate(data, str(path), positions)
