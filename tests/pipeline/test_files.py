"""Files a plugin config refers to are read relative to the blueprint's folder; their problems carry file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backworks.contracts.errors import BlueprintError
from backworks.pipeline import blueprints
from backworks.plugins.validate.config import ValidateConfig
from tests.files import write_blueprint

BLUEPRINT = """name: api
plugins:
  check:
    type: validate
    config:
      body: {file: schemas/note.json}
endpoints:
  e: {path: /x, methods: [POST], plugins: [check], handler: {type: mock}}
"""


def test_a_file_reference_is_read_from_the_blueprints_folder_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "api" / "schemas").mkdir(parents=True)
    (tmp_path / "api" / "schemas" / "note.json").write_text(json.dumps({"type": "object", "required": ["title"]}))
    path = write_blueprint(tmp_path / "api", BLUEPRINT)
    monkeypatch.chdir(tmp_path)
    config = blueprints.load(path).instances["check"].config
    assert isinstance(config, ValidateConfig)
    assert config.body == {"type": "object", "required": ["title"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read file 'schemas/note.json'"),
        ("{not json", "file 'schemas/note.json' is not valid JSON"),
        ('{"type": "objekt"}', "schema file 'schemas/note.json' is not a valid JSON Schema at /type"),
    ],
)
def test_problems_with_the_file_point_at_the_reference_in_the_blueprint(
    tmp_path: Path, content: str | None, message: str
) -> None:
    (tmp_path / "schemas").mkdir()
    if content is not None:
        (tmp_path / "schemas" / "note.json").write_text(content)
    path = write_blueprint(tmp_path, BLUEPRINT)
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(path)
    [issue] = caught.value.issues
    assert (issue.line, issue.pointer, issue.plugin) == (6, "/plugins/check/config/body", "check")
    assert message in issue.message
