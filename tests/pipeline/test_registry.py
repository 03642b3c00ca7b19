"""Discovery: entry points (built-ins included) and plugin folders; a broken plugin never hides the others."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from textwrap import dedent

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict

from backworks.pipeline import registry
from backworks.pipeline.configs import schema_of, schema_problems
from backworks.pipeline.errors import PluginContractError, PluginLoadError
from backworks.plugins.mock import Mock
from tests.samples import Passthrough

GROUP = registry.ENTRY_POINT_GROUP


class Shiny(Passthrough):
    name = "shiny"
    version = "2.0.0"
    description = "Found through an entry point."


class Unversioned(Shiny):
    name = "unversioned"
    version = "one"


class BadSchemaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": "one"})


class BadSchema(Shiny):
    name = "bad-schema"
    Config = BadSchemaConfig


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend these entry points are installed (and only these)."""
    here = __name__
    points = [
        EntryPoint("shiny", f"{here}:Shiny", GROUP),
        EntryPoint("unversioned", f"{here}:Unversioned", GROUP),
        EntryPoint("ghost", "no_such_module_anywhere:Ghost", GROUP),
        EntryPoint("alias", f"{here}:Shiny", GROUP),
        EntryPoint("mock", "backworks.plugins.mock:Mock", GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == GROUP else [])
    registry.refresh()
    yield
    registry.refresh()


def test_built_ins_register_through_entry_points() -> None:
    found = registry.discover()
    assert {"mock", "request-headers", "response-headers"} <= set(found)
    entry = found["mock"]
    assert entry.cls is Mock and entry.builtin and entry.origin == "built-in"
    assert entry.distribution is not None and entry.distribution.startswith("backworks ")
    assert registry.get("mock") is Mock


def test_every_built_in_config_schema_is_valid_json_schema_2020_12() -> None:
    """Loading a built-in skips the metaschema check (startup time), so this is where their schemas are checked."""
    built_ins = [entry for entry in registry.discover().values() if entry.builtin]
    assert {"mock", "request-headers", "response-headers", "fault", "delay"} <= {e.name for e in built_ins}
    for entry in built_ins:
        Draft202012Validator.check_schema(schema_of(entry.cls.Config))
        assert schema_problems(entry.cls.Config) == [], entry.name


def test_an_installed_plugin_that_is_not_built_in_has_its_schema_checked_against_the_metaschema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = [EntryPoint("bad-schema", f"{__name__}:BadSchema", GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == GROUP else [])
    registry.refresh()
    try:
        failure = registry.catalog().failure("bad-schema")
        assert isinstance(failure, PluginContractError)
        assert "generates an invalid JSON Schema" in str(failure)
    finally:
        registry.refresh()


@pytest.mark.usefixtures("installed")
def test_broken_entry_points_are_kept_as_failures_and_the_rest_load() -> None:
    found = registry.catalog()
    assert set(found.plugins) == {"shiny", "mock"}
    assert registry.get("shiny") is Shiny
    with pytest.raises(PluginContractError, match="version 'one' is not semver"):
        registry.get("unversioned")
    with pytest.raises(PluginLoadError, match=r"plugin 'ghost' .* cannot be imported: ModuleNotFoundError"):
        registry.get("ghost")
    with pytest.raises(PluginLoadError, match="entry point is named 'alias' but the class says name = 'shiny'"):
        registry.get("alias")


@pytest.mark.usefixtures("installed")
def test_an_unknown_plugin_error_suggests_a_close_name_and_lists_what_is_installed() -> None:
    with pytest.raises(PluginLoadError) as caught:
        registry.get("shinny")
    message = str(caught.value)
    assert message.startswith("unknown plugin type 'shinny' (did you mean 'shiny'?); installed: mock, shiny.")
    assert "plugin_dirs" in message


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    return path


PLUGIN = """
    from backworks import Action, Continue, Envelope, RequestProcessor, EmptyConfig

    class Base(RequestProcessor[EmptyConfig]):
        '''No name of its own: a helper base, not a plugin.'''

    class {cls}(Base):
        name = "{name}"
        version = "1.0.0"
        description = "From a folder."

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)
"""


def test_plugin_folders_load_files_and_packages_and_report_every_broken_one(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    write(folder, "stamp.py", PLUGIN.format(cls="Stamp", name="local-stamp"))
    write(folder, "pack/__init__.py", "from .impl import Packed\n")
    write(folder, "pack/impl.py", PLUGIN.format(cls="Packed", name="packed"))
    write(folder, "_private.py", "raise RuntimeError('never imported')\n")
    write(folder, "notes.txt", "not python")
    syntax = write(folder, "syntax.py", "def broken(:\n    pass\n")
    failing = write(folder, "failing.py", "import os\n\nraise RuntimeError('no config here')\n")
    write(folder, "contract.py", PLUGIN.format(cls="Nameless", name="").replace('version = "1.0.0"', ""))

    found = registry.catalog([folder])
    assert found.plugins["local-stamp"].path == str(folder / "stamp.py")
    assert found.plugins["local-stamp"].origin == str(folder / "stamp.py")
    assert found.plugins["packed"].cls.__name__ == "Packed"
    assert "mock" in found.plugins, "installed plugins stay available"
    errors = [str(error) for error in found.folder_failures[folder]]
    assert len(errors) == 3
    assert any(f"cannot import plugin file {syntax}:1: SyntaxError" in error for error in errors)
    assert any(f"cannot import plugin file {failing}:3: RuntimeError: no config here" in error for error in errors)
    contract = next(error for error in errors if "breaks the plugin contract" in error)
    assert f"{folder / 'contract.py'}:" in contract and "no `version`" in contract and "`name` must be" in contract


def test_a_folder_plugin_clashing_with_an_installed_one_is_a_failure(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    write(folder, "mock.py", PLUGIN.format(cls="OtherMock", name="mock"))
    found = registry.catalog([folder])
    twice = r"plugin 'mock' is provided twice: by entry point mock = backworks\.plugins\.mock"
    with pytest.raises(PluginLoadError, match=twice):
        found.get("mock")


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    found = registry.catalog([tmp_path / "nowhere"])
    (error,) = found.folder_failures[tmp_path / "nowhere"]
    assert "does not exist" in str(error)


def test_an_installed_plugin_is_imported_only_when_something_asks_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "heavy_plugin_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\nraise RuntimeError('broken on import')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        EntryPoint("shiny", f"{__name__}:Shiny", GROUP),
        EntryPoint("heavy", "heavy_plugin_module:Heavy", GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == GROUP else [])
    registry.refresh()
    try:
        found = registry.catalog()
        assert found.get("shiny") is Shiny
        assert "shiny" in found and found.entry("shiny") is not None
        assert not marker.exists(), "validating or serving a blueprint imports only the plugins it names"
        assert set(found.plugins) == {"shiny"}, "a listing imports every plugin"
        assert marker.exists()
        assert "RuntimeError: broken on import" in str(found.failures["heavy"])
    finally:
        registry.refresh()
