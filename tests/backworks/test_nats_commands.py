"""``backworks nats``: one node or a loopback cluster, its seeds on stdout, and ``nats status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.files import EXAMPLE, write_blueprint

BACKWORKS = str(Path(sys.executable).parent / "backworks")


def run(*args: str, state: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(state)}
    return subprocess.run([BACKWORKS, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_cluster_prints_its_seeds_and_status_shows_r3_streams_with_leaders(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(state)}
    process = subprocess.Popen(
        [BACKWORKS, "nats", "--cluster", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        seeds = process.stdout.readline().strip().split(",")  # printed once the streams are declared
        assert len(seeds) == 3 and all(seed.startswith("nats://127.0.0.1:") for seed in seeds), seeds
        status = run("nats", "status", "--format", "json", state=state)
        assert status.returncode == 0, status.stderr
        streams = {item["name"]: item for item in json.loads(status.stdout)}
        pipeline = streams["BW_PIPELINE"]
        assert pipeline["declared"] and pipeline["replicas"] == 3
        assert sorted([pipeline["leader"], *(peer["name"] for peer in pipeline["peers"])]) == ["n1", "n2", "n3"]
        assert streams["KV_bw_breakers"]["replicas"] == 3
        text = run("nats", "status", state=state)
        assert "BW_PIPELINE" in text.stdout and "current" in text.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "3 nodes" in err and "streams at R3" in err
    assert not (state / "nats.url").exists(), "the recorded seeds go away with the cluster"


def test_declare_refuses_r3_on_a_single_node_with_what_to_do(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(state)}
    server = subprocess.Popen(
        [BACKWORKS, "nats", "--no-declare"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        text = EXAMPLE.read_text().replace("nats: {url: embedded}", f"nats: {{url: '{url}', replicas: 3}}")
        blueprint = write_blueprint(tmp_path, text)
        started = time.monotonic()
        result = run("declare", str(blueprint), state=state)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert result.returncode == 1
    assert "nats.replicas: 3" in result.stderr and "single node" in result.stderr and "--cluster 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_replicas_beyond_the_cluster_size_are_a_usage_error(tmp_path: Path) -> None:
    result = run("nats", "--cluster", "2", "--replicas", "3", state=tmp_path)
    assert result.returncode == 2 and "--replicas 3 needs at least 3 nodes" in result.stderr
