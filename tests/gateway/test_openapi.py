from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from openapi_spec_validator import validate
from typer.testing import CliRunner

from backworks import __version__
from backworks.cli import app
from backworks.gateway.openapi import build
from backworks.pipeline import blueprints
from tests.files import write_blueprint
from tests.serving import Gateway

BLUEPRINT = """\
name: notes
description: Notes, kept.
endpoints:
  list:
    path: /notes
    handler: {type: mock, config: {body: [{id: 1, title: first}], headers: {x-total: "1"}}}
  create:
    path: /notes
    methods: [POST]
    handler: {type: python, config: {function: "notes_app:create"}}
  note:
    path: /notes/{id:int}
    methods: [GET, DELETE]
    handler: {type: mock, config: {status: 200, body: "note {path.id}"}}
  search:
    path: /search/{rest:path}
    handler: {type: proxy, config: {targets: [{url: "http://127.0.0.1:9"}]}}
  thing:
    path: /things/{uid:uuid}/{ratio:float}
    handler: {type: mock, config: {status: 204}}
"""


def load(tmp_path: Path) -> blueprints.LoadedBlueprint:
    (tmp_path / "notes_app.py").write_text("def create(request):\n    return 201, {}\n")
    return blueprints.load(write_blueprint(tmp_path, BLUEPRINT))


def test_the_document_is_valid_openapi_with_typed_parameters_problems_and_examples(tmp_path: Path) -> None:
    document = build(load(tmp_path), "1.2.3")
    validate(document)  # raises when the document breaks the OpenAPI 3.1 schema
    assert document["info"] == {"title": "notes", "version": "1.2.3", "description": "Notes, kept."}
    paths = document["paths"]
    assert set(paths) == {"/notes", "/notes/{id}", "/search/{rest}", "/things/{uid}/{ratio}"}
    assert set(paths["/notes"]) == {"get", "post"}
    (note_id,) = paths["/notes/{id}"]["get"]["parameters"]
    assert note_id == {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
    uid, ratio = paths["/things/{uid}/{ratio}"]["get"]["parameters"]
    assert uid["schema"] == {"type": "string", "format": "uuid"} and ratio["schema"]["type"] == "number"

    listed = paths["/notes"]["get"]["responses"]
    assert listed["200"]["content"]["application/json"]["example"] == [{"id": 1, "title": "first"}]
    assert set(listed["200"]["headers"]) == {"x-total"}
    assert set(listed) == {"200", "502", "503", "504"}, "a GET takes no body: no 413"
    assert paths["/notes/{id}"]["get"]["responses"]["200"]["content"]["text/plain"]["example"] == "note {path.id}"
    assert "content" not in paths["/things/{uid}/{ratio}"]["get"]["responses"]["204"]

    created = paths["/notes"]["post"]
    assert set(created["responses"]) == {"default", "400", "413", "500", "502", "503", "504"}
    problem = created["responses"]["500"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    assert "requestBody" in created
    assert "No upstream is available" in paths["/search/{rest}"]["get"]["responses"]["503"]["description"]
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids)) == 6


async def test_the_gateway_serves_the_document(tmp_path: Path, gateway: Gateway, nats_client: Client) -> None:
    loaded = load(tmp_path)
    async with gateway(loaded) as (http, _):
        response = await http.get("/_backworks/openapi.json")
    assert response.status_code == 200
    assert response.json() == build(loaded, __version__)


def test_the_cli_writes_the_document(tmp_path: Path) -> None:
    load(tmp_path)
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(app, ["openapi", str(tmp_path / "blueprint.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(out.read_text())
    assert document["openapi"] == "3.1.0" and "/notes/{id}" in document["paths"]
    printed = CliRunner().invoke(app, ["openapi", str(tmp_path / "blueprint.yaml")])
    assert json.loads(printed.stdout) == document
