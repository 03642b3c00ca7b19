"""Plugin commands of the CLI: ``plugins list``, ``plugins show``, ``new-plugin``, ``docs``, ``profile``.

Each takes an optional blueprint: its ``plugin_dirs`` add plugins to the installed ones, and its broker
gives ``plugins list`` the live replica counts (from the ``bw_registry`` bucket).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backworks.console import Format, FormatOption, console, fail, output
from backworks.contracts.types import Category

if TYPE_CHECKING:
    from backworks.pipeline.registry import Catalog, PluginEntry


plugins_app = typer.Typer(help="Installed plugins (and those in a blueprint's plugin_dirs).", no_args_is_help=True)

OptionalBlueprint = Annotated[
    Path | None,
    typer.Argument(
        help="A blueprint: adds the plugins in its plugin_dirs and, for `list`, its broker.", show_default=False
    ),
]


def peek(blueprint: Path) -> tuple[list[Path], str]:
    """A blueprint's plugin folders (absolute) and NATS URL, read without validating the rest."""
    import yaml

    from backworks.contracts.blueprint import EMBEDDED

    try:
        data = yaml.safe_load(blueprint.read_text())
    except OSError as exc:
        raise fail(f"cannot read blueprint {blueprint}: {exc.strerror or exc}", 2) from None
    except yaml.YAMLError as exc:
        raise fail(f"{blueprint}: YAML syntax error: {exc}", 2) from None
    data = data if isinstance(data, dict) else {}
    listed = data.get("plugin_dirs")
    folders = [(blueprint.parent / str(item)).resolve() for item in listed if item] if isinstance(listed, list) else []
    nats = data.get("nats")
    url = nats.get("url") if isinstance(nats, dict) else None
    return folders, str(url or EMBEDDED)


def catalog_for(blueprint: Path | None) -> Catalog:
    """Installed plugins, plus those in the blueprint's plugin folders."""
    from backworks.pipeline import registry

    return registry.catalog(peek(blueprint)[0] if blueprint else [])


def servers_for(blueprint: Path | None, given: str | None) -> list[str]:
    """Where to read live replicas: ``--nats``, else the blueprint's broker, else the embedded one recorded here."""
    from backworks.contracts.blueprint import EMBEDDED
    from backworks.local.servers import resolve

    return resolve(given, peek(blueprint)[1] if blueprint else EMBEDDED)


Live = dict[str, dict[str, int]]
"""Per plugin, live replicas per plugin version (replicas may run different versions side by side)."""


def live_counts(servers: list[str]) -> Live | None:
    """Live replicas per plugin and version, or ``None`` when there is no broker to ask (or it cannot be reached)."""
    if not servers:
        return None
    import asyncio

    from backworks.local import census
    from backworks.pipeline.errors import BrokerUnavailable

    try:
        return census.per_plugin_version(asyncio.run(census.snapshot(servers)))
    except BrokerUnavailable as exc:
        console.print(f"[yellow]live counts unknown:[/] {exc}", highlight=False)
        return None


def row_of(entry: PluginEntry, live: Live | None) -> dict[str, Any]:
    """One row of ``plugins list`` as data."""
    cls = entry.cls
    versions = None if live is None else live.get(entry.name, {})
    return {
        "name": entry.name,
        "version": cls.version,
        "category": cls.category.value,
        "source": entry.origin,
        "critical": cls.is_critical,
        "live": None if versions is None else sum(versions.values()),
        "live_versions": versions,
    }


def live_text(row: dict[str, Any]) -> str:
    """``2`` or, when a live replica runs another version than the one installed here, ``2 (1.0.0: 1, 2.0.0: 1)``."""
    versions: dict[str, int] | None = row["live_versions"]
    if versions is None:
        return "-"
    text = str(row["live"])
    if set(versions) - {row["version"]}:
        text += " (" + ", ".join(f"{version}: {count}" for version, count in sorted(versions.items())) + ")"
    return text


@plugins_app.command("list")
def list_plugins(
    blueprint: OptionalBlueprint = None,
    nats: Annotated[
        str | None, typer.Option("--nats", help="NATS URL(s) to read live replicas from.", show_default=False)
    ] = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """List plugins: name, version, category, source, critical, live replicas ("-" without a broker).

    Live replicas running another version than the one installed here are counted per version.
    """
    from rich.table import Table

    found = catalog_for(blueprint)
    live = live_counts(servers_for(blueprint, nats))
    rows = [row_of(found.plugins[name], live) for name in sorted(found.plugins)]
    failures = {name: str(error) for name, error in sorted(found.failures.items())}
    if format is Format.JSON:
        print(json.dumps({"plugins": rows, "failures": failures}, indent=2))
    else:
        table = Table(title="Backworks plugins", title_justify="left")
        for column in ("name", "version", "category", "source", "critical", "instances live"):
            table.add_column(column, justify="right" if column == "instances live" else "left", no_wrap=True)
        for row in rows:
            table.add_row(row["name"], row["version"], row["category"], row["source"],
                          "yes" if row["critical"] else "no", live_text(row))  # fmt: skip
        output().print(table)
        for name, message in failures.items():
            console.print(f"[red]plugin {name} cannot be used:[/] {message}", highlight=False, markup=True)


def describe(entry: PluginEntry, found: Catalog) -> dict[str, Any]:
    """Everything ``plugins show`` prints, as data (secrets in schema defaults masked)."""
    from backworks import docgen
    from backworks.pipeline.configs import schema_of
    from backworks.pipeline.contract import parse_constraint
    from backworks.pipeline.secrets import redact_schema

    cls = entry.cls
    dependencies = []
    for name, constraint in cls.dependencies.items():
        provider = found.plugins.get(name)
        installed = provider.cls.version if provider else None
        satisfied = installed is not None and installed in parse_constraint(constraint)
        dependencies.append({"name": name, "constraint": constraint or "*", "installed": installed,
                             "satisfied": satisfied})  # fmt: skip
    return {
        "name": cls.name,
        "version": cls.version,
        "description": cls.description,
        "category": cls.category.value,
        "phases": [phase.value for phase in cls.phases],
        "hooks": docgen.hooks_of(entry),
        "source": entry.source,
        "critical": cls.is_critical,
        "priority": cls.priority,
        "max_execution_time": cls.max_execution_time,
        "capabilities": list(cls.capabilities),
        "requires_capabilities": list(cls.requires_capabilities),
        "dependencies": dependencies,
        "config_schema": redact_schema(schema_of(cls.Config)),
    }


@plugins_app.command("show")
def show_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name.", show_default=False)],
    blueprint: OptionalBlueprint = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Show one plugin: metadata, dependencies, config fields and JSON Schema."""
    from rich.json import JSON
    from rich.table import Table

    from backworks.pipeline.configs import fields_of
    from backworks.pipeline.errors import PluginLoadError

    found = catalog_for(blueprint)
    try:
        found.get(name)
    except PluginLoadError as exc:
        raise fail(str(exc)) from None
    entry = found.plugins[name]
    info = describe(entry, found)
    if format is Format.JSON:
        print(json.dumps(info, indent=2))
        return
    out = output()
    facts = Table.grid(padding=(0, 2))
    for key in ("name", "version", "description", "category", "phases", "hooks", "source", "critical", "priority",
                "max_execution_time", "capabilities", "requires_capabilities"):  # fmt: skip
        value = info[key]
        facts.add_row(f"[bold]{key}[/]", ", ".join(value) if isinstance(value, list) else str(value))
    out.print(facts)
    deps = Table(title="dependencies", title_justify="left")
    for column in ("plugin", "constraint", "installed", "ok"):
        deps.add_column(column)
    for dep in info["dependencies"]:
        deps.add_row(dep["name"], dep["constraint"], dep["installed"] or "missing", "yes" if dep["satisfied"] else "NO")
    out.print(deps if info["dependencies"] else "dependencies: none")
    config = Table(title="config", title_justify="left")
    for column in ("key", "type", "required", "default", "secret", "description"):
        config.add_column(column)
    for field in fields_of(entry.cls.Config):
        config.add_row(field.name, field.type, "yes" if field.required else "no", field.shown_default,
                       "yes" if field.secret else "", field.description)  # fmt: skip
    out.print(config)
    out.print("[bold]config JSON Schema[/]")
    out.print(JSON(json.dumps(info["config_schema"])))


@plugins_app.command("order")
def order(
    blueprint: Annotated[Path, typer.Argument(help="Path to the blueprint YAML file.", show_default=False)],
    format: FormatOption = Format.TEXT,
) -> None:
    """Show each endpoint's resolved stages: blueprint order, dependencies first, then priority; co-located stages
    carry their group (`[group]`), and the groups are listed with their members."""
    from backworks.contracts.errors import BlueprintError
    from backworks.pipeline import blueprints

    try:
        loaded = blueprints.load(blueprint)
    except BlueprintError as exc:
        console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(2) from None
    plans = {name: [stage.label for stage in loaded.itinerary(name)] for name in loaded.model.endpoints}
    added = {name: [i for i in loaded.chain(name) if i not in loaded.model.chain(name)] for name in plans}
    # A canary split shows its baseline in the stages, and its branches and weights beside them.
    splits = {name: {split: dict(spec.split) for split, spec in loaded.model.splits(name).items()} for name in plans}
    groups = loaded.model.groups()
    if format is Format.JSON:
        document = {"endpoints": plans, "added_for_dependencies": added, "splits": splits, "groups": groups}
        print(json.dumps(document, indent=2))
        return
    out = output()
    for name in plans:
        stages = [s.label + (f" [{s.colocate}]" if s.colocate else "") for s in loaded.itinerary(name)]
        note = f"  (added for dependencies: {', '.join(added[name])})" if added[name] else ""
        out.print(f"{name}: {' -> '.join(stages)}{note}", highlight=False, markup=False)
        for split, weights in splits[name].items():
            shares = " / ".join(f"{branch} {weight}" for branch, weight in weights.items())
            out.print(f"  split {split}: {shares}", highlight=False, markup=False)
    for group, members in groups.items():
        line = f"co-located [{group}]: {', '.join(members)} (one process; in-memory hand-off)"
        out.print(line, highlight=False, markup=False)


def new_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name (lower-case, e.g. `rate-limit`).", show_default=False)],
    category: Annotated[
        Category, typer.Option("--category", help="What the plugin does: fixes its hooks.")
    ] = Category.REQUEST_PROCESSOR,
    directory: Annotated[Path, typer.Option("--dir", help="Where to create backworks-plugin-NAME/.")] = Path(),
    depends: Annotated[
        list[str] | None,
        typer.Option("--depends", help="A dependency as NAME[CONSTRAINT], e.g. 'api-key>=1.0,<2' (repeatable)."),
    ] = None,
    description: Annotated[str | None, typer.Option(help="One-line description.")] = None,
) -> None:
    """Scaffold a pip-installable plugin package: class, config model, entry point, tests, README."""
    from backworks.pipeline import registry
    from backworks.scaffold import ScaffoldError, refuse_taken, scaffold

    installed = registry.catalog([])
    taken = {name: entry.origin for name, entry in installed.plugins.items()}
    taken.update({name: "installed, fails to load" for name in installed.failures})
    try:
        refuse_taken(name, taken)
        made = scaffold(name, category, directory, depends=depends, description=description)
    except ScaffoldError as exc:
        raise fail(str(exc), 2) from None
    out = output()
    out.print(f"created {made.root} ({made.dist}, class {made.module}.{made.class_name})", highlight=False)
    for path in made.files:
        out.print(f"  {path.relative_to(made.root)}", highlight=False)
    out.print(f"next: cd {made.root} && pip install -e '.[test]' && pytest", highlight=False)


def docs(
    blueprint: OptionalBlueprint = None,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Generate a Markdown reference of the plugins from their metadata and config schemas."""
    from backworks import docgen

    text = docgen.render(catalog_for(blueprint))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}", highlight=False)


def profile_command(
    target: Annotated[str, typer.Argument(help="Plugin name, or an instance name with --blueprint.")],
    blueprint: Annotated[
        Path | None, typer.Option("--blueprint", help="Profile an instance of this blueprint, with its config.")
    ] = None,
    config: Annotated[str | None, typer.Option("--config", help="Plugin config as JSON.")] = None,
    requests: Annotated[int, typer.Option(min=1, help="Requests in the generated workload.")] = 1000,
    format: FormatOption = Format.TEXT,
    nats: Annotated[
        str | None,
        typer.Option(
            "--nats",
            help="NATS URL(s): a plugin using KV (rate-limit, cache) works on the real buckets (keys under the "
            "instance name `profile`), so its hook times include broker round trips. Default: an in-process store.",
        ),
    ] = None,
) -> None:
    """Profile a plugin in-process: per-hook calls, latency percentiles (ms) and allocations."""
    import asyncio

    from pydantic import BaseModel

    from backworks.contracts.blueprint import split_servers
    from backworks.contracts.errors import BackworksError, BlueprintError
    from backworks.pipeline import blueprints, broker, registry
    from backworks.pipeline.plugin import PluginClass
    from backworks.pipeline.stores import NatsRuntime
    from backworks.sdk.profiler import Profile, profile

    async def measure(cls: PluginClass, model: BaseModel | dict[str, Any]) -> Profile:
        if nats is None:
            return await profile(cls, model, requests=requests)
        client = await broker.connect(split_servers(nats), name="backworks-profile")
        try:
            runtime = NatsRuntime(client, broker.jetstream(client))
            return await profile(cls, model, requests=requests, runtime=runtime)
        finally:
            await client.close()

    if blueprint is not None:
        try:
            loaded = blueprints.load(blueprint)
        except BlueprintError as exc:
            console.print(str(exc), highlight=False, markup=False)
            raise typer.Exit(2) from None
        if target not in loaded.instances:
            known = ", ".join(sorted(loaded.instances))
            raise fail(f"no plugin instance {target!r} in {blueprint}; instances: {known}")
        cls, model = loaded.instances[target].cls, loaded.instances[target].config
        try:
            result = asyncio.run(measure(cls, model))
        except BackworksError as exc:
            raise fail(str(exc), 2) from None
    else:
        try:
            cls = registry.get(target)
            values = json.loads(config) if config else {}
            result = asyncio.run(measure(cls, values))
        except json.JSONDecodeError as exc:
            raise fail(f"--config is not JSON: {exc}", 2) from None
        except BackworksError as exc:
            raise fail(str(exc), 2) from None
    if format is Format.JSON:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        output().print(result.table())


def register(app: typer.Typer) -> None:
    """Add the plugin commands to the ``backworks`` CLI."""
    app.add_typer(plugins_app, name="plugins")
    app.command("new-plugin")(new_plugin)
    app.command("docs")(docs)
    app.command("profile")(profile_command)
