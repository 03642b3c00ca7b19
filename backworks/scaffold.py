"""``backworks new-plugin``: scaffolds a pip-installable plugin package whose tests pass as generated.

The package (``backworks-plugin-<name>/``) holds the plugin class and its config model under ``src/``, the
``backworks.plugins`` entry point that makes ``pip install`` enough for Backworks to find it, tests that use
the SDK both in-process and in a real stage host, and a README. Templates live in ``backworks/templates``,
one folder per category.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from backworks import __version__
from backworks.contracts.names import NAME_PATTERN
from backworks.pipeline.contract import parse_constraint
from backworks.pipeline.errors import PipelineError
from backworks.pipeline.plugin import Category

TEMPLATES = Path(__file__).parent / "templates"
DIST_PREFIX = "backworks-plugin-"
MODULE_PREFIX = "backworks_plugin_"
DEFAULT_DESCRIPTIONS = {
    Category.REQUEST_PROCESSOR: "Sets a request header before the handler.",
    Category.RESPONSE_ENHANCER: "Sets a response header after the handler.",
    Category.HANDLER: "Answers with a configured JSON message.",
    Category.SECURITY: "Lets through only requests that carry the configured token.",
    Category.MONITORING: "Counts requests and raises an alert on server errors.",
    Category.ANALYTICS: "Counts requests per route and reports them.",
}

EXAMPLE_CONFIGS: dict[Category, dict[str, str]] = {Category.SECURITY: {"token": "change-me-to-a-long-random-token"}}
"""A config for each category's generated plugin that passes its schema (the others need none)."""


class ScaffoldError(PipelineError):
    """The plugin cannot be scaffolded as asked (bad name, bad dependency, target exists)."""


@dataclass(frozen=True)
class Scaffold:
    """What ``new-plugin`` generates: names and the files written."""

    name: str
    dist: str
    module: str
    class_name: str
    root: Path
    files: list[Path]


def class_name_for(name: str) -> str:
    """``rate-limit`` -> ``RateLimit``."""
    parts = [part for part in re.split(r"[-_]", name) if part]
    camel = "".join(part[:1].upper() + part[1:] for part in parts)
    return camel if camel[:1].isalpha() else f"Plugin{camel}"


def parse_dependency(text: str) -> tuple[str, str]:
    """``api-key>=1.0,<2`` -> (``api-key``, ``>=1.0,<2``); a bare name accepts any version."""
    match = re.match(r"^\s*([a-z0-9][a-z0-9_-]*)\s*(.*)$", text)
    if not match:
        raise ScaffoldError(f"--depends expects NAME[CONSTRAINT] such as 'api-key>=1.0,<2', got {text!r}")
    name, constraint = match.group(1), match.group(2).strip()
    try:
        parse_constraint(constraint)
    except ValueError as exc:
        raise ScaffoldError(f"--depends {text!r}: {constraint!r} is not a version constraint ({exc})") from None
    return name, constraint


def refuse_taken(name: str, installed: Mapping[str, str]) -> None:
    """Raise ``ScaffoldError`` when an installed plugin (name -> where it comes from) already has ``name``."""
    if name in installed:
        raise ScaffoldError(
            f"a plugin named {name!r} is already installed ({installed[name]}): Backworks finds plugins by name, "
            "so choose another name"
        )


def usage_snippet(name: str, category: Category, dependencies: Mapping[str, str]) -> str:
    """The blueprint of the generated README: the plugin in one endpoint, with an instance of each dependency.

    Backworks puts the dependencies' instances before the plugin in the endpoint's stages; the blueprint only
    has to declare them (with the config they need: ``{}`` is a start, ``backworks validate`` says what is missing).
    """
    config = json.dumps(EXAMPLE_CONFIGS.get(category, {}))
    lines = [f"  my-{dependency}: {{type: {dependency}, config: {{}}}}" for dependency in dependencies]
    endpoint = "endpoints:\n  hello:\n    path: /hello\n"
    if category is Category.HANDLER:
        listed = ", ".join(f"my-{dependency}" for dependency in dependencies)
        plugins = f"    plugins: [{listed}]\n" if dependencies else ""
        body = f"{endpoint}{plugins}    handler: {{type: {name}, config: {config}}}\n"
    else:
        lines.insert(0, f"  my-{name}: {{type: {name}, config: {config}}}")
        body = f"{endpoint}    plugins: [my-{name}]\n    handler: {{type: mock, config: {{body: {{hello: world}}}}}}\n"
    return ("plugins:\n" + "\n".join(lines) + "\n" if lines else "") + body


def profile_hint(name: str, category: Category) -> str:
    """The ``backworks profile`` command line of the generated README, with a config that passes the schema."""
    config = EXAMPLE_CONFIGS.get(category)
    return f"backworks profile {name}" + (f" --config '{json.dumps(config)}'" if config else "")


def scaffold(
    name: str,
    category: Category,
    directory: Path,
    *,
    depends: list[str] | None = None,
    description: str | None = None,
) -> Scaffold:
    """Write a plugin package for ``name`` under ``directory``; refuses to overwrite anything."""
    if not re.match(NAME_PATTERN, name):
        raise ScaffoldError(f"plugin name {name!r} must be lower-case letters, digits, '-' or '_' (at most 63)")
    dependencies = dict(parse_dependency(item) for item in depends or [])
    if name in dependencies:
        raise ScaffoldError(f"plugin {name!r} cannot depend on itself")
    dist, module = f"{DIST_PREFIX}{name}", f"{MODULE_PREFIX}{name.replace('-', '_')}"
    root = directory / dist
    if root.exists() and any(root.iterdir()):
        raise ScaffoldError(f"{root} already exists and is not empty: choose another --dir or remove it")
    text = (description or DEFAULT_DESCRIPTIONS[category]).replace('"', "'")
    values = {
        "name": name,
        "dist": dist,
        "module": module,
        "class_name": class_name_for(name),
        "description": text,
        "category": category.value,
        "dependencies": json.dumps(dependencies),
        "backworks_version": __version__,
        "blueprint_snippet": usage_snippet(name, category, dependencies),
        "profile_hint": profile_hint(name, category),
    }
    source = TEMPLATES / category.value
    plan = {
        root / "pyproject.toml": TEMPLATES / "common" / "pyproject.toml.tmpl",
        root / "README.md": TEMPLATES / "common" / "README.md.tmpl",
        root / "src" / module / "__init__.py": source / "plugin.py.tmpl",
        root / "src" / module / "config.py": source / "config.py.tmpl",
        root / "tests" / f"test_{module}.py": source / "test.py.tmpl",
    }
    written = []
    for target, template in plan.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(template.read_text()).substitute(values))
        written.append(target)
    return Scaffold(name, dist, module, values["class_name"], root, written)
