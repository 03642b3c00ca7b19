"""The notes example's README walkthrough, run against ``backworks up examples/notes/blueprint.yaml``.

Every ``$ command`` of the README's ``console`` blocks runs in order against a fresh copy of the example (empty
database, free ports) and its output must be the one the README shows, volatile parts aside. So the README's
outputs are real, and the example (python handlers on SQLite, api-key, jwt, authorize, rate-limit, cache,
validate from three sources, a proxy to the search service `up` supervises) works from a fresh state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backworks.pipeline.blueprints import load
from tests.e2e.notes import EXAMPLE, running_example
from tests.e2e.walkthrough import normalise, run, steps

pytestmark = pytest.mark.e2e

README = EXAMPLE / "README.md"


def test_the_readme_has_a_walkthrough_with_outputs() -> None:
    found = steps(README.read_text())
    assert len(found) >= 20
    assert all(step.expected.strip() for step in found if not step.command.startswith("export "))
    assert normalise("date: Fri, 04 Dec 2026 19:57:44 GMT\r\nx-cache: hit") == "date: ...\nx-cache: hit"


def test_the_example_blueprint_is_valid_and_supervises_its_search_service() -> None:
    loaded = load(EXAMPLE / "blueprint.yaml")
    assert loaded.model.processes["search"].command[:2] == ["python", "search_service.py"]


def test_every_walkthrough_command_prints_what_the_readme_shows(tmp_path: Path) -> None:
    walkthrough = steps(README.read_text())
    env: dict[str, str] = {}
    with running_example(tmp_path) as example:
        for step in walkthrough:
            actual = run(step, example.base, env)
            assert normalise(actual) == normalise(step.expected), f"$ {step.command}\n{actual}"
