"""The ``fault-injection`` capability: a blueprint using ``fault`` is refused unless the process opted in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backworks.contracts.errors import BlueprintError
from backworks.pipeline import blueprints
from backworks.pipeline.capabilities import ALLOW_FAULT_ENV, FAULT_INJECTION, faults_allowed
from backworks.plugins.fault import Fault
from tests.files import write_blueprint

CHAOS = """name: drill
plugins:
  stamp: {type: request-headers, config: {set: {x-a: "1"}}}
  chaos: {type: fault, config: {mode: delay}}
endpoints:
  e: {path: /x, plugins: [stamp, chaos], handler: {type: mock, config: {body: ok}}}
"""
BACKWORKS = str(Path(sys.executable).parent / "backworks")


def test_fault_declares_the_capability() -> None:
    assert FAULT_INJECTION in Fault.capabilities


@pytest.mark.parametrize(("value", "allowed"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_only_an_explicit_yes_opts_in(monkeypatch: pytest.MonkeyPatch, value: str, allowed: bool) -> None:
    monkeypatch.setenv(ALLOW_FAULT_ENV, value)
    assert faults_allowed() is allowed


def test_a_blueprint_with_fault_is_refused_without_the_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_FAULT_ENV, raising=False)
    path = write_blueprint(tmp_path, CHAOS)
    with pytest.raises(BlueprintError) as refused:
        blueprints.load(path)
    (issue,) = refused.value.issues
    assert issue.file == str(path)
    assert issue.pointer == "/plugins/chaos/type"
    assert issue.plugin == "chaos"
    assert issue.line == 4, "points at the instance's line in the file"
    assert "plugin 'fault' injects faults" in issue.message
    assert f"set {ALLOW_FAULT_ENV}=1" in issue.message


def test_a_blueprint_with_fault_loads_with_the_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_FAULT_ENV, "1")
    loaded = blueprints.load(write_blueprint(tmp_path, CHAOS))
    assert [stage.instance for stage in loaded.itinerary("e")][:2] == ["stamp", "chaos"]


def test_a_blueprint_without_fault_needs_no_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_FAULT_ENV, raising=False)
    text = CHAOS.replace("  chaos: {type: fault, config: {mode: delay}}\n", "").replace(", chaos]", "]")
    assert "fault" not in text
    blueprints.load(write_blueprint(tmp_path, text))


@pytest.mark.parametrize("opt_in", [None, "1"])
def test_backworks_validate_reports_it_both_ways(tmp_path: Path, opt_in: str | None) -> None:
    """The CLI a user runs, in a separate process whose environment has the opt-in or not."""
    env = {key: value for key, value in os.environ.items() if key != ALLOW_FAULT_ENV}
    if opt_in:
        env[ALLOW_FAULT_ENV] = opt_in
    path = write_blueprint(tmp_path, CHAOS)
    result = subprocess.run(
        [BACKWORKS, "validate", str(path), "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    body = json.loads(result.stdout)
    if opt_in:
        assert result.returncode == 0 and body["valid"] is True, result.stdout
    else:
        assert result.returncode == 1 and body["valid"] is False
        (error,) = body["errors"]
        assert error["pointer"] == "/plugins/chaos/type" and error["plugin"] == "chaos"
        assert error["file"] == str(path) and ALLOW_FAULT_ENV in error["message"]


CORS_SECOND = """name: api
defaults: {plugins: [headers]}
plugins:
  headers: {type: response-headers, config: {set: {x-a: "1"}}}
  stamp: {type: request-headers, config: {set: {x-a: "1"}}}
  browsers: {type: cors}
endpoints:
  first: {path: /a, plugins: [browsers, stamp], handler: {type: mock}}
  second: {path: /b, plugins: [stamp, browsers], handler: {type: mock}}
"""


def test_a_cors_preflight_plugin_must_be_the_first_request_stage(tmp_path: Path) -> None:
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(write_blueprint(tmp_path, CORS_SECOND))
    [issue] = caught.value.issues  # a response-only stage before it (headers) is fine: it refuses nothing
    assert (issue.pointer, issue.line, issue.plugin) == ("/endpoints/second/plugins/1", 9, "browsers")
    assert "answers CORS preflights and must run first, but 'stamp' run(s) before it" in issue.message
