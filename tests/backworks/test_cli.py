"""The ``backworks`` CLI as a user meets it: quick to start, data on stdout, one ``--format``, help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import typer.main
from nats.aio.client import Client
from typer.testing import CliRunner

from backworks.cli import app
from backworks.local.embedded import EmbeddedNats
from backworks.local.state import NATS_URL_FILE, state_dir
from backworks.pipeline.blueprints import check_path_template
from tests.files import EXAMPLE, ROOT

runner = CliRunner()
HEAVY = ("nats", "faststream", "starlette", "uvicorn", "httpx")
IMPORTED_BY = """
import sys
from typing import Any
sys.argv = ["backworks", *sys.argv[1:]]
import backworks.cli
try:
    backworks.cli.main()
except SystemExit:
    pass
print(sorted({name.split(".")[0] for name in sys.modules}))
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", str(EXAMPLE)], ["plugins", "--help"], ["version"]])
def test_help_and_validate_import_no_broker_client_and_no_web_stack(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTED_BY, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert "typer" in imported  # the probe saw the CLI run
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize("args", [["--help"], ["plugins", "--help"], ["version"]])
def test_help_imports_no_blueprint_model(args: list[str]) -> None:
    """pydantic and the blueprint model were ~100 ms of `--help`'s 0.2 s start (-X importtime)."""
    result = subprocess.run([sys.executable, "-c", IMPORTED_BY, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert "typer" in imported and "pydantic" not in imported, sorted(imported)


MODULES_IMPORTED_BY = IMPORTED_BY.replace('name.split(".")[0] for name in sys.modules', "name for name in sys.modules")
PLUGINS_PACKAGE = "backworks.plugins."
HELLO_PLUGINS = {"mock", "request_headers", "response_headers"}
"""The plugins examples/hello/blueprint.yaml names (as module names)."""


def test_validate_imports_only_what_checking_the_blueprint_needs() -> None:
    """No diagnostics console (rich) for a valid blueprint, no `up` machinery, no plugin the blueprint does not name."""
    command = [sys.executable, "-c", MODULES_IMPORTED_BY, "validate", str(EXAMPLE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert "backworks.pipeline.blueprints" in imported  # the probe saw validate run
    plugins = {name[len(PLUGINS_PACKAGE) :].split(".")[0] for name in imported if name.startswith(PLUGINS_PACKAGE)}
    assert plugins == HELLO_PLUGINS
    unneeded = {name for name in imported if name.split(".")[0] == "rich" or name.startswith("backworks.local")}
    assert not unneeded, sorted(unneeded)


def commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI (``("dlq", "list")``…), groups included (typer vendors click: duck-typed)."""
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if hasattr(command, "commands"):
            found += commands(command, (*prefix, name))
    return found


ALL_COMMANDS = commands(typer.main.get_command(app))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout and "--help" in result.stdout


def test_commands_are_all_there() -> None:
    assert {" ".join(path) for path in ALL_COMMANDS} >= {
        "version", "validate", "asyncapi", "openapi", "nats", "declare", "gateway", "serve", "up", "dlq", "dlq list",
        "dlq show", "dlq replay", "plugins", "plugins list", "plugins show", "plugins order", "new-plugin",
        "docs", "profile",
    }  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [["validate", str(EXAMPLE)], ["version"], ["plugins", "list"], ["dlq", "list"], ["profile", "mock"]],
    ids=lambda args: args[0] + (" " + args[1] if args[1:2] and not args[1].startswith("/") else ""),
)
def test_format_is_text_or_json_and_anything_else_is_a_usage_error(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--format", "table"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--format'" in result.stderr
    assert "'text'" in result.stderr and "'json'" in result.stderr


def test_version_in_both_formats() -> None:
    from backworks import __version__

    assert runner.invoke(app, ["version"]).stdout.strip() == __version__
    assert json.loads(runner.invoke(app, ["version", "--format", "json"]).stdout) == {"version": __version__}


def test_validate_reports_on_stdout() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0
    assert "valid (1 endpoints" in result.stdout and result.stderr == ""


def record(server: EmbeddedNats) -> None:
    """What `backworks nats`/`backworks up` leave in the state directory."""
    (state_dir() / NATS_URL_FILE).write_text(server.url)


async def test_dlq_list_prints_its_table_on_stdout_from_the_recorded_broker(
    nats_server: EmbeddedNats, nats_client: Client
) -> None:
    import asyncio

    record(nats_server)
    result = await asyncio.to_thread(runner.invoke, app, ["dlq", "list"])
    assert result.exit_code == 0, result.output
    assert "0 dead letter(s)" in result.stdout
    assert result.stderr == ""
    as_json = await asyncio.to_thread(runner.invoke, app, ["dlq", "list", "--format", "json"])
    assert json.loads(as_json.stdout) == []


def test_dlq_without_a_broker_says_what_to_do() -> None:
    result = runner.invoke(app, ["dlq", "list"])
    assert result.exit_code == 1
    assert "no broker given: pass --nats URL" in result.stderr and result.stdout == ""


async def test_plugins_list_finds_the_embedded_broker_like_dlq_list(
    nats_server: EmbeddedNats, nats_client: Client
) -> None:
    import asyncio

    without = await asyncio.to_thread(runner.invoke, app, ["plugins", "list", "--format", "json"])
    assert {row["live"] for row in json.loads(without.stdout)["plugins"]} == {None}, "no broker recorded yet"
    record(nats_server)
    result = await asyncio.to_thread(runner.invoke, app, ["plugins", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    live = {row["name"]: row["live"] for row in json.loads(result.stdout)["plugins"]}
    assert live["mock"] == 0, "asked the recorded broker: a count, not unknown"
    assert "live counts unknown" not in result.stderr


@pytest.mark.parametrize(
    "path", ["/a", "/a/{id}", "/a/{id:int}/{rest:path}", "/{x:uuid}", "/{a}/{a}", "/{a:nope}", "/{a:float}/b"]
)
def test_path_templates_are_checked_as_starlette_compiles_them(path: str) -> None:
    from starlette.routing import compile_path

    try:
        compile_path(path)
        starlette_error = None
    except (AssertionError, ValueError) as exc:
        starlette_error = str(exc)
    try:
        check_path_template(path)
        ours = None
    except ValueError as exc:
        ours = str(exc)
    assert ours == starlette_error


def readme_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Command line") :]
    section = section[: section.index("\n## ", 1)]
    return [line for line in section.splitlines() if line.startswith("| `backworks")]


def options_of(command: Any) -> list[list[str]]:
    """Each long option of a command, with its alternatives (``--declare``/``--no-declare``)."""
    return [
        [name for name in [*param.opts, *param.secondary_opts] if name.startswith("--")]
        for param in command.params
        if getattr(param, "param_type_name", "") == "option" and "--help" not in param.opts
    ]


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_the_readme_table_lists_every_command_with_all_its_options(path: tuple[str, ...]) -> None:
    root: Any = typer.main.get_command(app)
    command = root
    for name in path:
        command = command.commands[name]
    if hasattr(command, "commands"):
        assert any(row.startswith(f"| `backworks {' '.join(path)} ") for row in readme_rows())
        return
    (row,) = [row for row in readme_rows() if row.startswith(f"| `backworks {' '.join(path)} ")] or [
        pytest.fail(f"README's Command line table has no row for `backworks {' '.join(path)}`")
    ]
    cell = row.split("` |")[0]
    missing = [names for names in options_of(command) if not any(name in cell for name in names)]
    assert missing == [], f"`backworks {' '.join(path)}` options missing from the README: {missing}"


def test_the_readme_table_lists_the_global_options() -> None:
    root: Any = typer.main.get_command(app)
    (row,) = [row for row in readme_rows() if row.startswith("| `backworks [")]
    assert all(any(name in row for name in names) for names in options_of(root))


def test_a_long_diagnostic_stays_on_one_line_when_stderr_is_a_pipe(tmp_path: Any) -> None:
    missing = tmp_path / ("a-folder-with-a-rather-long-name-" * 3) / "blueprint.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "backworks", "gateway", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(str(missing) in line for line in lines), f"the path was split over lines: {result.stderr!r}"
