"""Dependency resolution: plugin dependencies are satisfied, and each endpoint's stages are ordered.

Two checks, both reporting the whole chain (``acl -> rbac -> api-key``):

- **types**: for every plugin type a blueprint uses, each dependency (transitively) is installed, its
  version satisfies the constraint, it is not a handler, and there is no cycle (``a -> b -> a``);
- **endpoints**: each dependency of a stage is served by an instance on the same endpoint. If the endpoint
  does not list one but the blueprint declares exactly one instance of the needed plugin, that instance is
  added to the endpoint's chain.

The order of an endpoint's chain is a topological sort (stdlib ``graphlib``): the blueprint's explicit
order first (defaults, then the endpoint's list), moved only as far as needed to put dependencies before
their dependents (a dependency takes the place of its earliest dependent); ``priority`` (higher first)
orders plugins that are otherwise tied, such as two dependencies of one stage that the blueprint does not list.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from packaging.version import InvalidVersion, Version

from backworks.pipeline.contract import parse_constraint
from backworks.pipeline.plugin import Category, PluginClass


@dataclass(frozen=True)
class DependencyProblem:
    """A dependency that cannot be satisfied, blamed on one plugin instance."""

    instance: str
    message: str


def _describe(constraint: str) -> str:
    return f" ({constraint})" if constraint.strip() not in ("", "*") else ""


def type_problems(root: str, classes: Mapping[str, PluginClass], broken: Mapping[str, Exception]) -> list[str]:
    """What is wrong with the (transitive) dependencies of plugin type ``root``; each names its chain."""
    problems: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        cls = classes[name]
        for dependency, constraint in cls.dependencies.items():
            chain = " -> ".join([*path, dependency])
            if dependency in path:
                cycle = " -> ".join([*path[path.index(dependency) :], dependency])
                problems.append(f"dependency cycle: {cycle}; remove one of these dependencies")
                continue
            if dependency in broken:
                first_line = str(broken[dependency]).splitlines()[0]
                problems.append(f"dependency {chain}: plugin {dependency!r} cannot be loaded: {first_line}")
                continue
            if dependency not in classes:
                problems.append(
                    f"missing dependency {chain}: {name} needs plugin {dependency!r}{_describe(constraint)}, which is "
                    "not installed; pip install a package providing it or add its folder to plugin_dirs"
                )
                continue
            provider = classes[dependency]
            try:
                satisfied = Version(provider.version) in parse_constraint(constraint)
            except InvalidVersion:
                satisfied = False
            if not satisfied:
                problems.append(
                    f"version conflict {chain}: {name} {cls.version} needs {dependency} {constraint} but "
                    f"{dependency} {provider.version} is installed; install a matching version"
                )
            if provider.category is Category.HANDLER:
                problems.append(
                    f"dependency {chain}: {dependency!r} is a handler, which runs last on its own endpoint; "
                    "a plugin cannot depend on a handler"
                )
                continue
            if dependency not in done:
                visit(dependency, [*path, dependency])
        done.add(name)

    visit(root, [root])
    return list(dict.fromkeys(problems))


@dataclass
class EndpointPlan:
    """The ordered chain of one endpoint, with the instances added for dependencies."""

    chain: list[str]
    added: list[str]
    problems: list[DependencyProblem]


def plan_endpoint(
    endpoint: str,
    explicit: list[str],
    handler: str | None,
    instances: Mapping[str, PluginClass],
    declared: list[str],
    usable_types: Container[str],
) -> EndpointPlan:
    """Order an endpoint's chain (instance names) so that dependencies come first.

    ``instances`` maps every resolved instance name to its class, ``declared`` lists the instances under
    ``/plugins`` (candidates to add). Dependencies on types outside ``usable_types`` (not installed, broken,
    handlers) are skipped here: ``type_problems`` reports them.
    """
    members = [name for name in explicit if name in instances]
    position = {name: index for index, name in enumerate(members)}
    added: list[str] = []
    edges: set[tuple[str, str]] = set()
    problems: list[DependencyProblem] = []
    work = list(members) + ([handler] if handler is not None and handler in instances else [])
    while work:
        current = work.pop(0)
        cls = instances[current]
        for dependency, constraint in cls.dependencies.items():
            if dependency not in usable_types:
                continue
            providers = [name for name in members if instances[name].name == dependency]
            if not providers:
                candidates = [
                    name for name in declared
                    if name in instances and instances[name].name == dependency
                    and instances[name].category is not Category.HANDLER
                ]  # fmt: skip
                if len(candidates) == 1:
                    providers = candidates
                    members.append(candidates[0])
                    added.append(candidates[0])
                    work.append(candidates[0])
                elif not candidates:
                    problems.append(DependencyProblem(current, (
                        f"endpoint {endpoint!r}: {current!r} ({cls.name}) needs plugin {dependency!r}"
                        f"{_describe(constraint)}, but the blueprint declares no instance of it: add one under /plugins"
                    )))  # fmt: skip
                    continue
                else:
                    problems.append(DependencyProblem(current, (
                        f"endpoint {endpoint!r}: {current!r} ({cls.name}) needs plugin {dependency!r} and several "
                        f"instances of it are declared ({', '.join(candidates)}): list the one to use in this "
                        "endpoint's plugins"
                    )))  # fmt: skip
                    continue
            if current != handler:
                edges.update((provider, current) for provider in providers)
        for capability in cls.requires_capabilities:
            providers = [name for name in members if capability in instances[name].capabilities and name != current]
            if providers:
                if current != handler:
                    edges.update((provider, current) for provider in providers)
                continue
            problems.append(DependencyProblem(current, _capability_missing(
                endpoint, current, cls, capability, [*members, *([handler] if handler else [])], instances, declared
            )))  # fmt: skip
    return EndpointPlan(_order(members, position, edges, lambda name: instances[name].priority), added, problems)


def _capability_missing(
    endpoint: str,
    current: str,
    cls: PluginClass,
    capability: str,
    chain: list[str],
    instances: Mapping[str, PluginClass],
    declared: list[str],
) -> str:
    """Why ``current`` cannot run: nothing in its endpoint's chain provides ``capability``; what would."""
    offers = [
        f"{name} ({instances[name].name})" for name in declared
        if name in instances and capability in instances[name].capabilities
    ]  # fmt: skip
    hint = (
        f"add one of the declared instances that provide it ({', '.join(offers)}) to this endpoint's plugins"
        if offers
        else f"declare an instance of a plugin that provides it (e.g. api-key or jwt for {capability!r}) under "
        "/plugins and add it to this endpoint's plugins"
    )
    return (
        f"endpoint {endpoint!r}: {current!r} ({cls.name}) requires the {capability!r} capability from an earlier "
        f"stage, but nothing in its chain provides it ({' -> '.join(chain)}): {hint}"
    )


def _order(
    members: list[str], position: Mapping[str, int], edges: set[tuple[str, str]], priority: Callable[[str], int]
) -> list[str]:
    """A topological order (stdlib ``graphlib``) that stays as close to the blueprint's order as it can.

    Among the stages ready at each step, the one that comes first wins: a dependency takes the place of its
    earliest (transitive) dependent, then blueprint position, then higher ``priority``, then name.
    """
    providers: dict[str, set[str]] = {name: set() for name in members}
    dependents: dict[str, list[str]] = {name: [] for name in members}
    for provider, dependent in edges:
        providers[dependent].add(provider)
        dependents[provider].append(dependent)
    try:
        dependents_first = reversed(list(TopologicalSorter(providers).static_order()))
    except CycleError:
        return list(members)  # reported by ``type_problems`` (the blueprint is refused): keep blueprint order
    rank = {name: float(position.get(name, math.inf)) for name in members}
    for name in dependents_first:
        rank[name] = min([rank[name], *(rank[dependent] for dependent in dependents[name])])

    def key(name: str) -> tuple[float, float, int, str]:
        return (rank[name], float(position.get(name, math.inf)), -priority(name), name)

    sorter = TopologicalSorter(providers)
    sorter.prepare()
    ready: list[tuple[tuple[float, float, int, str], str]] = []
    ordered: list[str] = []
    while sorter.is_active():
        for name in sorter.get_ready():
            heapq.heappush(ready, (key(name), name))
        _, name = heapq.heappop(ready)
        ordered.append(name)
        sorter.done(name)
    return ordered
