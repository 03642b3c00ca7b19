"""Version pins: two versions of one plugin serve side by side; a replica outside its instance's pin never consumes."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_durable
from backworks.local import census
from backworks.local.ports import free_port
from backworks.pipeline import blueprints, broker, pins, stagehost
from backworks.pipeline.blueprints import ResolvedInstance
from backworks.pipeline.stagehost import StageHost
from tests.e2e.processes import BACKWORKS
from tests.files import write_blueprint
from tests.samples import PLUGIN_DIR, PROCESSOR_FACTORY_SOURCE, processor, write_plugin_file

BLUEPRINT = f"""name: api
plugin_dirs: [{PLUGIN_DIR}]
plugins:
  greet-v1: {{type: greeter, version: "<2"}}
  greet-v2: {{type: greeter, version: ">=2,<3"}}
endpoints:
  e: {{path: /x, plugins: [{{greet: {{split: {{greet-v1: 90, greet-v2: 10}}}}}}], handler: {{type: mock}}}}
"""


@pytest.fixture
def pinned(tmp_path: Path) -> Path:
    """A blueprint whose two instances pin two version ranges of one plugin; version 1.5.0 is installed here."""
    write_plugin_file(tmp_path, "greeter.py", PROCESSOR_FACTORY_SOURCE + 'Greeter = processor("greeter", "1.5.0")\n')
    return write_blueprint(tmp_path, BLUEPRINT)


def running(instance: ResolvedInstance, version: str) -> ResolvedInstance:
    """``instance`` as a replica whose environment has ``version`` of its plugin installed."""
    return dataclasses.replace(instance, cls=processor(instance.cls.name, version))


def test_a_pin_allows_the_versions_in_its_range() -> None:
    assert pins.allows(None, "0.0.1")
    assert pins.allows(">=2,<3", "2.4.1") and pins.allows(">=2,<3", "2.1.0-rc.1")
    assert not pins.allows(">=2,<3", "1.9.9") and not pins.allows(">=2,<3", "3.0.0")
    assert not pins.allows(">=1", "not-a-version")


async def test_two_versions_serve_side_by_side_and_a_replica_outside_its_pin_never_consumes(
    pinned: Path, nats_client: Client
) -> None:
    loaded = blueprints.load(pinned)  # validation does not judge pins: the replicas may run other versions
    old, new = loaded.instances["greet-v1"], running(loaded.instances["greet-v2"], "2.1.0")
    refused = loaded.instances["greet-v2"]  # 1.5.0, outside ">=2,<3"
    with pytest.raises(pins.VersionRefused) as caught:
        StageHost(refused, nats_client)
    message = str(caught.value)
    assert "instance 'greet-v2' is pinned to plugin 'greeter' versions '>=2,<3'" in message
    assert "this replica runs greeter 1.5.0" in message and "/plugins/greet-v2/version" in message
    # Refused before connecting: a bogus broker address is never dialled.
    with pytest.raises(pins.VersionRefused):
        await stagehost.serve(refused, ["nats://127.0.0.1:1"], asyncio.Event())
    js = broker.jetstream(nats_client)
    with pytest.raises(NotFoundError):
        await js.consumer_info(PIPELINE_STREAM, stage_durable("greet-v2", Phase.REQUEST))

    hosts = [StageHost(old, nats_client), StageHost(new, nats_client)]
    try:
        for host in hosts:
            await host.start()

        async def versions() -> dict[str, dict[str, int]]:
            return census.per_plugin_version(census.live(await census.read(js)))

        for _ in range(100):
            if (await versions()).get("greeter") == {"1.5.0": 1, "2.1.0": 1}:
                break
            await asyncio.sleep(0.05)
        assert await versions() == {"greeter": {"1.5.0": 1, "2.1.0": 1}}
        by_instance = {info.instance: info.version for info in await census.read(js)}
        assert by_instance == {"greet-v1": "1.5.0", "greet-v2": "2.1.0"}
    finally:
        for host in hosts:
            await host.stop()


def test_serve_and_up_exit_with_the_reason_when_the_installed_version_is_outside_a_pin(pinned: Path) -> None:
    port = str(free_port())
    for args in (["serve", "greet-v2", str(pinned), "--nats", f"nats://127.0.0.1:{port}"], ["up", str(pinned)]):
        result = subprocess.run([BACKWORKS, *args], capture_output=True, text=True, timeout=60, cwd=pinned.parent)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        said = " ".join((result.stdout + result.stderr).split())
        assert "instance 'greet-v2' is pinned to plugin 'greeter' versions '>=2,<3'" in said, said
