"""Loads a blueprint file and validates it as a whole: YAML, structure, plugin folders, every plugin's
config (against its JSON Schema), references, routes and plugin dependencies.

Every problem is collected (not just the first) with the file, line, column, JSON pointer and plugin
instance, so ``backworks validate`` can report them all at once. A valid blueprint comes with each
endpoint's stage order resolved (``backworks.pipeline.dependencies``).

A plugin that declares the ``fault-injection`` capability (the built-in ``fault``: it can hang, leak
memory and exit its process) is refused unless ``BACKWORKS_ALLOW_FAULT=1`` is set in the environment of
the process that validates the blueprint (``backworks.pipeline.capabilities``), so it cannot reach a
production blueprint by accident.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from backworks.contracts.blueprint import Blueprint, PluginInstance, handler_instance
from backworks.contracts.envelope import Stage
from backworks.contracts.errors import BlueprintError, ConfigIssue
from backworks.contracts.names import Phase
from backworks.contracts.splits import UNION_TAGS, Split
from backworks.pipeline import credentials, registry, secrets, splits
from backworks.pipeline.capabilities import ALLOW_FAULT_ENV, CORS_PREFLIGHT, FAULT_INJECTION, faults_allowed
from backworks.pipeline.configs import ConfigContext, validate_config
from backworks.pipeline.dependencies import plan_endpoint, type_problems
from backworks.pipeline.errors import PluginLoadError
from backworks.pipeline.plugin import Category, Credentials, PluginClass
from backworks.pipeline.registry import Catalog, Classes, Failures

Position = tuple[int, int]
_PARAM = re.compile(r"\{[^}:]+(:[^}]+)?\}")
_ROUTE_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")
"""Starlette's ``routing.PARAM_REGEX``; kept here so that ``backworks validate`` imports no web stack."""
ROUTE_CONVERTORS = ("str", "path", "int", "float", "uuid")
"""Starlette's built-in path convertors (``starlette.convertors.CONVERTOR_TYPES``); the gateway adds none."""


def check_path_template(path: str) -> None:
    """Raise ``ValueError`` where Starlette's ``compile_path`` would refuse ``path`` (unknown convertor, duplicate)."""
    seen: set[str] = set()
    for match in _ROUTE_PARAM.finditer(path):
        name, convertor = match.group(1), (match.group(2) or ":str")[1:]
        if convertor not in ROUTE_CONVERTORS:
            raise ValueError(f"Unknown path convertor '{convertor}'")
        if name in seen:
            raise ValueError(f"Duplicated param name {name} at path {path}")
        seen.add(name)


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
        return Stage(
            instance=self.name,
            phase=phase,
            critical=self.critical,
            timeout_ms=round(self.timeout * 1000),
            colocate=self.spec.colocate,
        )


@dataclass(frozen=True)
class LoadedBlueprint:
    """A blueprint that passed every check."""

    path: Path
    model: Blueprint
    instances: dict[str, ResolvedInstance]
    chains: dict[str, list[str]] = field(default_factory=dict)
    """Per endpoint, the instances run before its handler, in resolved order (dependencies first)."""
    catalog: Catalog | None = None
    """The plugins available to this blueprint (installed and from its plugin folders)."""
    variant_chains: dict[tuple[str, splits.SplitKey], list[str]] = field(default_factory=dict)
    """Per endpoint with splits and per combination of branches (``splits.variants``), the resolved chain."""
    data: Any = field(default=None, compare=False, repr=False)
    """The blueprint as written (parsed YAML): what a revision in ``bw_config`` stores."""

    def chain(self, endpoint: str, picks: splits.Picks | None = None) -> list[str]:
        """Instances an endpoint runs before its handler, in resolved order; with ``picks``, those branches."""
        if picks:
            found = self.variant_chains.get((endpoint, splits.split_key(picks)))
            return found if found is not None else self.model.chain(endpoint, picks)
        return self.chains.get(endpoint) or self.model.chain(endpoint)

    def itineraries(self, endpoint: str) -> list[tuple[dict[str, str], list[Stage]]]:
        """Every itinerary the endpoint can take, with the branches it takes (one, ``{}``, without splits)."""
        return [(picks, self.itinerary(endpoint, picks)) for picks in splits.variants(self.model, endpoint)]

    def itinerary(self, endpoint: str, picks: splits.Picks | None = None) -> list[Stage]:
        """Ordered stages of an endpoint: the request phase of its chain, the handler, then the response
        phase of its chain in reverse. ``picks`` chooses the branch of each split (default: the baselines)."""
        chain = [self.instances[name] for name in self.chain(endpoint, picks)]
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
            loc = [part for part in loc if part != "[key]" and part not in UNION_TAGS]
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
            self.add(base + pointer(loc), message, plugin, key=is_key)


def _duplicates(node: yaml.Node, prefix: str, file: str, out: list[ConfigIssue]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                first = seen[name].start_mark.line + 1
                out.append(ConfigIssue(file, f"{prefix}/{escape(name)}",
                                       f"duplicate key {name!r} (first at line {first}); YAML keeps only the last",
                                       key.start_mark.line + 1, key.start_mark.column + 1))  # fmt: skip
            seen[name] = key
            _duplicates(value, f"{prefix}/{escape(name)}", file, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicates(item, f"{prefix}/{index}", file, out)


def _read(path: Path) -> tuple[Any, dict[str, Position], list[ConfigIssue]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BlueprintError([ConfigIssue(str(path), "", f"cannot read blueprint: {exc.strerror or exc}")]) from exc
    loader = yaml.SafeLoader(text)
    try:
        # One parse: the node tree gives the line of every key, and the data is constructed from that same tree.
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise BlueprintError([ConfigIssue(str(path), "", f"YAML syntax error: {problem}", line, column)]) from exc
    except yaml.YAMLError as exc:
        raise BlueprintError([ConfigIssue(str(path), "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    positions: dict[str, Position] = {}
    duplicates: list[ConfigIssue] = []
    if node is not None:
        _positions(node, "", positions)
        _duplicates(node, "", str(path), duplicates)
    return data, positions, duplicates


def _catalog(report: _Report, model: Blueprint, base: Path) -> tuple[Catalog, dict[int, str]]:
    """The plugins this blueprint can use; folder errors are reported, and remembered by error for blame."""
    folders = [(index, (base / folder).resolve()) for index, folder in enumerate(model.plugin_dirs)]
    found = registry.catalog([folder for _, folder in folders])
    blame: dict[int, str] = {}
    for index, folder in folders:
        for error in found.folder_failures.get(folder, []):
            report.add(f"/plugin_dirs/{index}", str(error))
            blame[id(error)] = f"/plugin_dirs/{index}"
    return found, blame


def _context(model: Blueprint, base: Path, name: str, spec: PluginInstance, cls: PluginClass) -> ConfigContext:
    """What the config validators of instance ``name`` may know about where it is used."""
    return ConfigContext(
        instance=name,
        blueprint_dir=base.resolve(),
        plugin_dirs=tuple((base / folder).resolve() for folder in model.plugin_dirs),
        timeout_s=spec.timeout_ms / 1000 if spec.timeout_ms else float(cls.max_execution_time),
        max_concurrent=spec.limits.max_concurrent,
        max_body_bytes=model.gateway.max_body_bytes,
    )


def _resolve(
    report: _Report,
    name: str,
    spec: PluginInstance,
    at: str,
    found: Catalog,
    blame: dict[int, str],
    model: Blueprint,
    base: Path,
) -> ResolvedInstance | None:
    try:
        cls = found.get(spec.type)
    except PluginLoadError as exc:
        folder = blame.get(id(exc))
        message = f"plugin {spec.type!r} failed to load (see {folder})" if folder else str(exc)
        report.add(f"{at}/type", message, name)
        return None
    config, problems = validate_config(cls.Config, spec.config, _context(model, base, name, spec, cls))
    for problem in problems:
        report.add(f"{at}/config{pointer(problem.path)}", problem.message, name, key=problem.at_key)
    if config is None:
        return None
    secrets.register(secrets.secret_values(config))
    return ResolvedInstance(name, spec, cls, config)


def _instance_pointer(model: Blueprint, endpoint: str, instance: str) -> str:
    if instance == handler_instance(endpoint):
        return f"/endpoints/{escape(endpoint)}/handler/type"
    for index, entry in enumerate(model.endpoints[endpoint].plugins):
        if entry == instance:
            return f"/endpoints/{escape(endpoint)}/plugins/{index}"
        if isinstance(entry, dict) and instance in (found := next(iter(entry.items())))[1].split:
            return splits.branch_pointer(f"/endpoints/{escape(endpoint)}", index, escape(found[0]), escape(instance))
    if instance in model.defaults.plugins:
        return f"/defaults/plugins/{model.defaults.plugins.index(instance)}"
    return f"/plugins/{escape(instance)}/type"


@dataclass(frozen=True)
class _Usable(Container[str]):
    """Plugin types a dependency can name: installed, loadable and not handlers (imported when asked)."""

    classes: Classes

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.classes and self.classes[name].category is not Category.HANDLER


def _resolve_dependencies(
    report: _Report,
    model: Blueprint,
    resolved: dict[str, ResolvedInstance],
    found: Catalog,
    where: dict[str, str],
    variant_chains: dict[tuple[str, splits.SplitKey], list[str]],
) -> dict[str, list[str]]:
    classes = Classes(found)
    checked: dict[str, list[str]] = {}
    for name, item in resolved.items():
        if item.cls.name not in checked:
            checked[item.cls.name] = type_problems(item.cls.name, classes, Failures(found))
        for text in checked[item.cls.name]:
            report.add(f"{where[name]}/type", text, name)
    usable = _Usable(classes)
    instances = {name: item.cls for name, item in resolved.items()}
    chains: dict[str, list[str]] = {}
    for endpoint in model.endpoints:
        reported: set[tuple[str, str]] = set()
        for picks in splits.variants(model, endpoint):  # the baseline first: that is ``chains[endpoint]``
            plan = plan_endpoint(
                endpoint, model.chain(endpoint, picks), handler_instance(endpoint), instances, list(model.plugins),
                usable,
            )  # fmt: skip
            for problem in plan.problems:
                if (problem.instance, problem.message) not in reported:
                    reported.add((problem.instance, problem.message))
                    report.add(_instance_pointer(model, endpoint, problem.instance), problem.message, problem.instance)
            chains.setdefault(endpoint, plan.chain)
            if picks:
                variant_chains[(endpoint, splits.split_key(picks))] = plan.chain
    return chains


def _check_references(report: _Report, model: Blueprint, resolved: dict[str, ResolvedInstance]) -> None:
    lists: list[tuple[str, list[str | dict[str, Split]]]] = [("/defaults/plugins", list(model.defaults.plugins))]
    lists += [(f"/endpoints/{escape(name)}/plugins", endpoint.plugins) for name, endpoint in model.endpoints.items()]
    for at, names in lists:
        for index, name in enumerate(names):
            if not isinstance(name, str):
                continue  # a split: ``splits.check`` reports its branches
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


def _check_fault_opt_in(report: _Report, resolved: dict[str, ResolvedInstance], where: dict[str, str]) -> None:
    if faults_allowed():
        return
    for name, item in resolved.items():
        if FAULT_INJECTION in item.cls.capabilities:
            report.add(
                f"{where[name]}/type",
                f"plugin {item.cls.name!r} injects faults (hangs, memory leaks, process exits) and is for tests "
                f"and chaos drills only; to use it, set {ALLOW_FAULT_ENV}=1 in the environment of every "
                "backworks process (`backworks up` passes it on to its services)",
                name,
            )


def _check_preflight_first(
    report: _Report, model: Blueprint, resolved: dict[str, ResolvedInstance], chains: dict[str, list[str]]
) -> None:
    """A plugin answering CORS preflights must be the first request stage of its endpoints (see ``capabilities``)."""
    for endpoint, chain in chains.items():
        for index, name in enumerate(chain):
            item = resolved.get(name)
            if item is None or CORS_PREFLIGHT not in item.cls.capabilities:
                continue
            earlier = [o for o in chain[:index] if o in resolved and Phase.REQUEST in resolved[o].cls.phases]
            if not earlier:
                continue
            before = ", ".join(repr(other) for other in earlier)
            report.add(_instance_pointer(model, endpoint, name), (
                f"endpoint {endpoint!r}: {name!r} ({item.cls.name}) answers CORS preflights and must run first, but "
                f"{before} run(s) before it: a preflight carries no credentials, body or parameters, so an earlier "
                f"stage could refuse it; list {name!r} first (in defaults.plugins when the others are there)"
            ), name)  # fmt: skip


PROCESS_LIMITS = ("memory_mb", "cpu_seconds", "open_files")
"""Resource limits that apply to a whole process: the members of a co-location group must agree on them."""


def _check_groups(report: _Report, model: Blueprint, where: dict[str, str]) -> None:
    """A group's name must not be an instance's (``backworks serve NAME`` takes either); its members share one
    process, so they must agree on that process's limits."""
    instances = model.instances()
    for group, members in model.groups().items():
        first = where[members[0]]
        if group in instances:
            report.add(f"{first}/colocate", f"co-location group {group!r} has the name of a plugin instance; "
                       "`backworks serve` takes both: rename the group", members[0])  # fmt: skip
        for limit in PROCESS_LIMITS:
            values = {name: getattr(instances[name].limits, limit) for name in members}
            if len(set(values.values())) > 1:
                given = ", ".join(f"{name}: {value}" for name, value in values.items())
                message = f"the members of co-location group {group!r} run in one process and must set the same "
                report.add(f"{first}/limits/{limit}", f"{message}limits.{limit} (or none), got {given}", members[0])


def _check_routes(report: _Report, model: Blueprint) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, endpoint in model.endpoints.items():
        at = f"/endpoints/{escape(name)}"
        try:
            check_path_template(endpoint.path)
        except ValueError as exc:
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


def _declare_credentials(report: _Report, resolved: dict[str, ResolvedInstance], where: dict[str, str]) -> None:
    """Resolve ``Plugin.credentials(config)`` over the instances, so this process redacts what they read."""
    headers: set[str] = set()
    query: set[str] = set()
    for name, item in resolved.items():
        try:
            found = item.cls.credentials(item.config)
        except Exception as exc:
            report.add(f"{where[name]}/config", f"plugin {item.cls.name!r}: credentials(config) raised {exc!r}", name)
            continue
        if not isinstance(found, Credentials):
            report.add(f"{where[name]}/type", f"plugin {item.cls.name!r}: credentials(config) must return "
                       f"Credentials(headers=..., query=...), got {type(found).__name__}", name)  # fmt: skip
            continue
        headers.update(found.headers)
        query.update(found.query)
    credentials.declare(headers, query)


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
    found, blame = _catalog(report, model, Path(file).parent)
    where = {name: f"/plugins/{escape(name)}" for name in model.plugins}
    where.update({handler_instance(name): f"/endpoints/{escape(name)}/handler" for name in model.endpoints})
    resolved: dict[str, ResolvedInstance] = {}
    for name, spec in model.instances().items():
        item = _resolve(report, name, spec, where[name], found, blame, model, Path(file).parent)
        if item:
            resolved[name] = item
    _check_references(report, model, resolved)
    splits.check(report.add, model, {name: item.cls for name, item in resolved.items()}, escape)
    _check_fault_opt_in(report, resolved, where)
    _check_routes(report, model)
    _check_groups(report, model, where)
    variant_chains: dict[tuple[str, splits.SplitKey], list[str]] = {}
    chains = _resolve_dependencies(report, model, resolved, found, where, variant_chains)
    _declare_credentials(report, resolved, where)
    _check_preflight_first(report, model, resolved, chains)
    if report.issues:
        raise BlueprintError(report.issues)
    return LoadedBlueprint(Path(file), model, resolved, chains, found, variant_chains, data)


def load(path: str | Path) -> LoadedBlueprint:
    """Read and validate a blueprint file; raise ``BlueprintError`` listing every problem."""
    path = Path(path)
    data, positions, duplicates = _read(path)
    try:
        loaded = validate(data, str(path), positions)
    except BlueprintError as exc:
        raise BlueprintError(duplicates + exc.issues) from None
    if duplicates:
        raise BlueprintError(duplicates)
    return loaded
