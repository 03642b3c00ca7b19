"""docker-compose.yml runs the same CLI commands a user would; check they exist and fit the blueprint."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from backworks.cli import app
from backworks.pipeline import blueprints
from tests.files import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
BACKWORKS_SERVICES = {name: s for name, s in SERVICES.items() if s.get("command", [""])[0] == "backworks"}


def cli_commands() -> Any:
    command = typer.main.get_command(app)
    assert hasattr(command, "commands"), "the CLI is a group of commands"
    return command


@pytest.mark.parametrize("name", sorted(BACKWORKS_SERVICES))
def test_every_compose_command_exists_and_parses(name: str) -> None:
    args = BACKWORKS_SERVICES[name]["command"][1:]
    group = cli_commands()
    assert args[0] in group.commands, f"service {name}: `backworks {args[0]}` is not a command"
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    # The arguments themselves parse: click raises UsageError on unknown options.
    context = group.commands[args[0]].make_context(args[0], list(args[1:]), resilient_parsing=False)
    assert context.params


def test_every_plugin_instance_has_a_service_and_blueprints_exist() -> None:
    served: set[str] = set()
    for service in BACKWORKS_SERVICES.values():
        command = service["command"]
        blueprint = next(arg for arg in command if arg.endswith(".yaml"))
        loaded = blueprints.load(ROOT / blueprint)
        if command[1] == "serve":
            assert command[2] in loaded.instances
            served.add(command[2])
    assert served == set(blueprints.load(ROOT / "examples/hello/blueprint.yaml").instances)


def test_the_broker_config_the_compose_file_mounts_exists() -> None:
    mounts = SERVICES["nats"]["volumes"]
    config = next(m.split(":")[0] for m in mounts if m.endswith(".conf:ro"))
    assert (ROOT / config).is_file()
    assert "jetstream" in (ROOT / config).read_text()
