"""One import namespace: a user's own ``plugins/``, ``contracts/``, ``pipeline/`` or ``gateway/`` never shadows ours."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

from backworks.local.ports import free_port
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy
from tests.files import EXAMPLE, ROOT

SHADOWS = ("plugins", "contracts", "pipeline", "gateway")
BUILT_INS = sorted(e.name for e in entry_points(group="backworks.plugins") if e.value.startswith("backworks."))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder with packages of its own named like the design's folders.

    Importing any of them leaves a marker file, so a test can tell that Backworks reached for the user's
    package instead of its own.
    """
    folder = tmp_path / "project"
    for name in SHADOWS:
        package = folder / name
        package.mkdir(parents=True)
        marker = folder / f"imported-{name}"
        (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
        (package / "mock.py").write_text("RAISED = 'the user\\'s own module'\n")
    return folder


def shadowed(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("imported-*"))


def run(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_built_ins_are_known_to_the_test() -> None:
    assert {"mock", "request-headers", "response-headers", "delay"} <= set(BUILT_INS)


@pytest.mark.parametrize("command", [[BACKWORKS], [sys.executable, "-m", "backworks"]], ids=["script", "python-m"])
def test_plugins_list_from_a_folder_with_packages_of_its_own(project: Path, command: list[str]) -> None:
    result = run([*command, "plugins", "list", "--format", "json"], project)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["failures"] == {}, listed["failures"]
    assert sorted(row["name"] for row in listed["plugins"]) == BUILT_INS
    assert shadowed(project) == []


def test_up_serves_the_example_from_a_folder_with_packages_of_its_own(project: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    up = start("up", str(EXAMPLE), "--port", str(port), log=log, cwd=project, env={"PYTHONPATH": str(project)})
    try:
        wait_healthy(base, process=up, log=log)
        response = httpx.get(f"{base}/hello/world", timeout=5)
        assert response.status_code == 200, response.text
        assert response.json() == {"greeting": "Hello, world!"}
    finally:
        stop(up, timeout=15)
    assert up.returncode == 0, log.read_text()[-3000:]
    assert shadowed(project) == []


def test_a_built_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ behind, and a stale build/ would leak old modules into a wheel.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(".git", ".venv", ".ci-venv", "build", "*.egg-info", "bench-results", "*cache*")
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("backworks-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
        entry_text = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"backworks"}
    assert top_level == ["backworks"]
    # The design's folders are inside it, with their data files, as real files (not links).
    for path in (
        "backworks/gateway/app.py",
        "backworks/gateway/dashboard_assets/index.html",
        "backworks/gateway/dashboard_assets/dashboard.js",
        "backworks/gateway/dashboard_assets/dashboard.css",
        "backworks/pipeline/stagehost.py",
        "backworks/plugins/mock/__init__.py",
        "backworks/contracts/envelope.py",
        "backworks/contracts/schemas/envelope.v1.json",
        "backworks/templates/common/pyproject.toml.tmpl",
        "backworks/py.typed",
    ):
        assert path in names, path
    for name in BUILT_INS:
        assert f"{name} = backworks." in entry_text, entry_text
