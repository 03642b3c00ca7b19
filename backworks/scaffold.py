"""``backworks new-plugin``: scaffolds a pip-installable plugin package whose tests pass as generated.

The package (``backworks-plugin-<name>/``) holds the plugin class and its config model under ``src/``, the
``backworks.plugins`` entry point that makes ``pip install`` enough for Backworks to find it, tests that use
the SDK both in-process and in a real stage host, and a README. Templates live in ``backworks/templates``,
one folder per category.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from backworks import __version__
from backworks.contracts.blueprint import NAME_PATTERN
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
