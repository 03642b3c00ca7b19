"""``validate`` with ``openapi`` + ``operation``: parameters and body of an OpenAPI 3.x operation, $refs resolved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backworks.contracts.envelope import Envelope
from backworks.pipeline.configs import validate_config
from backworks.pipeline.plugin import Continue, Respond
from backworks.plugins.validate import Validate
from backworks.plugins.validate.config import ValidateConfig

OPENAPI_30 = """
openapi: 3.0.3
info: {title: notes, version: "1"}
paths:
  /notes/{id}:
    parameters:
      - $ref: '#/components/parameters/NoteId'
    put:
      operationId: updateNote
      parameters:
        - {name: dry_run, in: query, schema: {type: boolean}}
        - {name: X-Tenant, in: header, required: true, schema: {type: string}}
        - {name: Content-Type, in: header, required: true, schema: {type: string}}
        - {name: session, in: cookie, required: true, schema: {type: string}}
      requestBody:
        $ref: '#/components/requestBodies/Note'
    get:
      operationId: getNote
components:
  parameters:
    NoteId: {name: id, in: path, required: true, schema: {type: integer, minimum: 1, exclusiveMinimum: true}}
  requestBodies:
    Note:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Note'}
  schemas:
    Note:
      type: object
      required: [title]
      properties:
        title: {type: string}
        due: {type: string, nullable: true}
        owner: {$ref: '#/components/schemas/Person'}
    Person:
      type: object
      properties:
        name: {type: string}
"""


def plugin(tmp_path: Path, text: str = OPENAPI_30, operation: str = "updateNote") -> Validate:
    (tmp_path / "api.yaml").write_text(text)
    model, problems = validate_config(ValidateConfig, {"openapi": "api.yaml", "operation": operation}, tmp_path)
    assert model is not None, problems
    assert isinstance(model, ValidateConfig)
    return Validate(model, instance="v")


def put(note_id: str, body: Any, **extra: Any) -> Envelope:
    return Envelope(
        route="r",
        method="PUT",
        path=f"/notes/{note_id}",
        path_params={"id": note_id},
        headers=[("content-type", "application/json"), *extra.get("headers", [("x-tenant", "acme")])],
        query=extra.get("query", []),
        body=json.dumps(body).encode(),
    )


async def test_a_request_matching_the_operation_goes_on(tmp_path: Path) -> None:
    validate = plugin(tmp_path)
    envelope = put("2", {"title": "t", "due": None, "owner": {"name": "ann"}}, query=[("dry_run", "false")])
    assert isinstance(await validate.process_request(envelope), Continue)


async def test_parameters_and_body_of_the_operation_are_checked_through_refs(tmp_path: Path) -> None:
    validate = plugin(tmp_path)
    envelope = put("1", {"due": 5, "owner": {"name": 7}}, query=[("dry_run", "maybe")], headers=[])
    action = await validate.process_request(envelope)
    assert isinstance(action, Respond) and action.response.status == 422
    errors = [(e["pointer"], e["keyword"]) for e in json.loads(action.response.body)["errors"]]
    assert errors == [
        ("/path/id", "exclusiveMinimum"),  # 3.0's boolean exclusiveMinimum, converted
        ("/query/dry_run", "type"),
        ("/headers/x-tenant", "required"),  # Content-Type and cookie parameters are not checked
        ("/body/title", "required"),
        ("/body/due", "type"),  # nullable: true admits null, not a number
        ("/body/owner/name", "type"),
    ]


async def test_a_required_request_body_must_be_there(tmp_path: Path) -> None:
    envelope = put("2", {})
    envelope.body = b""
    action = await plugin(tmp_path).process_request(envelope)
    assert isinstance(action, Respond) and action.response.status == 422
    assert json.loads(action.response.body)["errors"][0]["pointer"] == "/body"


async def test_openapi_31_schemas_are_json_schema_as_they_are(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": ["integer", "null"], "exclusiveMinimum": 0}}}
    operation = {"operationId": "make", "requestBody": {"content": {"application/json": {"schema": schema}}}}
    text = json.dumps(
        {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"post": operation}}}
    )
    validate = plugin(tmp_path, text, "make")
    ok = Envelope(
        route="r", method="POST", path="/x", headers=[("content-type", "application/json")], body=b'{"n":null}'
    )
    assert isinstance(await validate.process_request(ok), Continue)
    bad = ok.model_copy(update={"body": b'{"n": 0}'})
    action = await validate.process_request(bad)
    assert isinstance(action, Respond) and action.response.status == 422


@pytest.mark.parametrize(
    ("text", "operation", "path", "message"),
    [
        (
            OPENAPI_30,
            "deleteNote",
            ("operation",),
            "no operation with operationId 'deleteNote'; its operationIds: getNote, updateNote",
        ),
        ("swagger: '2.0'", "x", ("openapi",), "is not an OpenAPI 3.x document"),
        (
            OPENAPI_30.replace("'#/components/schemas/Person'", "'#/components/schemas/Nobody'"),
            "updateNote",
            ("openapi",),
            "points to nothing",
        ),
        (
            OPENAPI_30.replace("{type: boolean}", "{type: bool}"),
            "updateNote",
            ("openapi",),
            "(parameter 'dry_run') is not a valid JSON Schema",
        ),
    ],
)
def test_document_problems_are_config_errors_at_load(
    tmp_path: Path, text: str, operation: str, path: tuple[str, ...], message: str
) -> None:
    (tmp_path / "api.yaml").write_text(text)
    model, problems = validate_config(ValidateConfig, {"openapi": "api.yaml", "operation": operation}, tmp_path)
    assert model is None
    assert [p.path for p in problems] == [path]
    assert message in problems[0].message, problems[0].message
