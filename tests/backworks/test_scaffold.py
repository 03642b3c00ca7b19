"""``backworks new-plugin``: the generated package is complete and its tests pass as generated."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from backworks.pipeline.plugin import Category
from backworks.scaffold import ScaffoldError, class_name_for, parse_dependency, scaffold


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
