"""``backworks new-plugin``: the generated package is complete and its tests pass as generated."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backworks.cli import app
from backworks.pipeline.plugin import Category
from backworks.scaffold import Scaffold, ScaffoldError, class_name_for, parse_dependency, refuse_taken, scaffold

BACKWORKS = str(Path(sys.executable).parent / "backworks")


def test_names_and_dependencies() -> None:
    assert class_name_for("rate-limit") == "RateLimit"
    assert class_name_for("geo_ip") == "GeoIp"
    assert class_name_for("2fa") == "Plugin2fa"
    assert parse_dependency("api-key>=1.0,<2") == ("api-key", ">=1.0,<2")
    assert parse_dependency("mock") == ("mock", "")
    with pytest.raises(ScaffoldError, match="cannot depend on itself"):
        scaffold("loop", Category.HANDLER, Path("/nonexistent"), depends=["loop>=1"])


def test_the_package_declares_its_entry_point_and_dependencies(tmp_path: Path) -> None:
    made = scaffold("rate-limit", Category.SECURITY, tmp_path, depends=["request-headers>=1.0,<2"])
    assert made.root == tmp_path / "backworks-plugin-rate-limit"
    assert sorted(str(path.relative_to(made.root)) for path in made.files) == [
        "README.md",
        "pyproject.toml",
        "src/backworks_plugin_rate_limit/__init__.py",
        "src/backworks_plugin_rate_limit/config.py",
        "tests/test_backworks_plugin_rate_limit.py",
    ]
    project = tomllib.loads((made.root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "backworks-plugin-rate-limit"
    assert project["project"]["entry-points"]["backworks.plugins"] == {
        "rate-limit": "backworks_plugin_rate_limit:RateLimit"
    }
    source = (made.root / "src" / "backworks_plugin_rate_limit" / "__init__.py").read_text()
    assert "class RateLimit(Security[RateLimitConfig]):" in source
    assert 'dependencies = {"request-headers": ">=1.0,<2"}' in source
    assert "pip install ." in (made.root / "README.md").read_text()


def test_generated_tests_pass_as_generated_for_every_category(tmp_path: Path) -> None:
    made = [scaffold(f"gen-{category.value}", category, tmp_path) for category in Category]
    sources = " ".join(str(item.root / "src") for item in made)
    config = tmp_path / "pytest.ini"
    config.write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"pythonpath = {sources}\nfilterwarnings = error\naddopts = --strict-markers\n"
    )
    tests = [str(item.root / "tests") for item in made]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(config), *tests],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "13 passed" in result.stdout, result.stdout


def test_new_plugin_refuses_the_name_of_an_installed_plugin(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["new-plugin", "mock", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "a plugin named 'mock' is already installed (built-in)" in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written"
    with pytest.raises(ScaffoldError, match="already installed"):
        refuse_taken("request-headers", {"request-headers": "built-in"})
    refuse_taken("fresh", {"request-headers": "built-in"})


def installed_like_pip(made: Scaffold, site: Path) -> dict[str, str]:
    """What ``pip install`` gives Backworks: the package importable and its entry point in a dist-info folder."""
    info = site / f"{made.module}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {made.dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[backworks.plugins]\n{made.name} = {made.module}:{made.class_name}\n")
    paths = [str(made.root / "src"), str(site), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}


@pytest.mark.parametrize("depends", [[], ["request-headers>=1.0,<2"]], ids=["alone", "with-depends"])
@pytest.mark.parametrize("category", list(Category), ids=lambda category: category.value)
def test_the_readme_blueprint_validates_and_its_profile_hint_runs(
    tmp_path: Path, category: Category, depends: list[str]
) -> None:
    made = scaffold(f"gen-{category.value}", category, tmp_path, depends=depends)
    env = installed_like_pip(made, tmp_path / "site")
    readme = (made.root / "README.md").read_text()
    (snippet,) = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    blueprint = tmp_path / "blueprint.yaml"
    blueprint.write_text(snippet)
    validated = subprocess.run(
        [BACKWORKS, "validate", str(blueprint)], capture_output=True, text=True, env=env, timeout=60
    )
    assert validated.returncode == 0, snippet + validated.stdout + validated.stderr
    assert "valid (1 endpoints" in validated.stdout
    (hint,) = re.findall(r"`(backworks profile [^`]*)`", readme)
    profiled = subprocess.run(
        [BACKWORKS, *shlex.split(hint)[1:]], capture_output=True, text=True, env=env, timeout=60
    )  # exactly as printed
    assert profiled.returncode == 0, hint + profiled.stdout + profiled.stderr
    assert f"profile of {made.name} 0.1.0: 1000 requests" in profiled.stdout
