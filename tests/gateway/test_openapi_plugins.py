"""What a chain's plugins add to the OpenAPI document: security, parameters and bodies from ``validate`` (each of
its three sources), and the problems each chain can answer. Every document is checked by openapi-spec-validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from backworks.gateway.openapi import build
from backworks.gateway.openapi_plugins import inline_schema
from backworks.pipeline import blueprints
from tests.files import ROOT, write_blueprint

DIGEST = "0" * 64
BLUEPRINT = f"""\
name: shop
plugins:
  key: {{type: api-key, config: {{header: x-api-key, query: api_key, keys: [{{consumer: a, sha256: "{DIGEST}"}}]}}}}
  token: {{type: jwt, config: {{algorithms: [HS256], secret_file: secret.txt}}}}
  custom-token: {{type: jwt, config: {{algorithms: [HS256], secret_file: secret.txt, header: x-token}}}}
  writer: {{type: authorize, config: {{scopes: ["orders:write"]}}}}
  limit: {{type: rate-limit, config: {{limit: 5}}}}
  inline:
    type: validate
    config:
      query: {{page: {{type: integer, minimum: 1}}}}
      headers: {{x-tenant: {{type: string}}, content-type: {{type: string}}}}
      required: {{headers: [x-tenant]}}
      path: {{id: {{type: integer, maximum: 99}}}}
  from-file: {{type: validate, config: {{body: {{file: order.json}}}}}}
  from-openapi: {{type: validate, config: {{openapi: rules.yaml, operation: patchOrder}}}}
endpoints:
  orders:
    path: /orders
    methods: [POST]
    plugins: [key, token, writer, limit, from-file]
    handler: {{type: mock, config: {{status: 201, body: {{id: 1}}}}}}
  order:
    path: /orders/{{id:int}}
    methods: [GET]
    plugins: [custom-token, inline]
    handler: {{type: mock, config: {{body: {{id: 1}}}}}}
  patch:
    path: /orders/{{id:int}}
    methods: [PATCH]
    plugins: [from-openapi]
    handler: {{type: mock, config: {{body: {{id: 1}}}}}}
  open:
    path: /health
    handler: {{type: mock, config: {{body: ok}}}}
"""
ORDER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["sku"],
    "properties": {"sku": {"$ref": "#/$defs/sku"}},
    "$defs": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}},
}
RULES = """\
openapi: 3.0.3
info: {title: rules, version: "1"}
paths:
  /orders/{id}:
    patch:
      operationId: patchOrder
      parameters: [{name: dry_run, in: query, required: true, schema: {type: boolean}}]
      requestBody:
        content: {application/json: {schema: {$ref: "#/components/schemas/Patch"}}}
      responses: {"200": {description: ok}}
components:
  schemas:
    Patch: {type: object, properties: {note: {type: string, nullable: true}}}
"""


def document(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "secret.txt").write_text("a-test-secret-of-at-least-32-bytes!!\n")
    (tmp_path / "order.json").write_text(json.dumps(ORDER))
    (tmp_path / "rules.yaml").write_text(RULES)
    built = build(blueprints.load(write_blueprint(tmp_path, BLUEPRINT)), "1")
    validate(built)  # raises when the document breaks the OpenAPI 3.1 schema
    return built


def test_security_schemes_come_from_api_key_and_jwt_and_requirements_combine_with_scopes(tmp_path: Path) -> None:
    built = document(tmp_path)
    assert built["components"]["securitySchemes"] == {
        "key": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": DESCRIPTIONS["key"]},
        "key-query": {"type": "apiKey", "in": "query", "name": "api_key", "description": DESCRIPTIONS["key"]},
        "token": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": DESCRIPTIONS["token"]},
        "custom-token": {
            "type": "apiKey",
            "in": "header",
            "name": "x-token",
            "description": DESCRIPTIONS["custom-token"],
        },
    }
    create = built["paths"]["/orders"]["post"]
    # both stages must pass; the key may come from the header or the query; authorize's scopes are listed
    assert create["security"] == [
        {"key": ["orders:write"], "token": ["orders:write"]},
        {"key-query": ["orders:write"], "token": ["orders:write"]},
    ]
    assert built["paths"]["/orders/{id}"]["get"]["security"] == [{"custom-token": []}]
    assert "security" not in built["paths"]["/health"]["get"]


DESCRIPTIONS = {
    "key": "An API key (`key`); keys are issued by the API's operators.",
    "token": "A JWT (`token`) signed with HS256",
    "custom-token": "A JWT (`custom-token`) signed with HS256",
}


def test_each_chain_lists_the_problems_its_stages_can_answer(tmp_path: Path) -> None:
    built = document(tmp_path)
    create = built["paths"]["/orders"]["post"]["responses"]
    assert sorted(create) == ["201", "400", "401", "403", "413", "415", "422", "429", "502", "503", "504"]
    assert "`limit`" in create["429"]["description"] and "Retry-After" in create["429"]["headers"]
    assert "WWW-Authenticate" in create["401"]["headers"]
    assert create["201"]["content"]["application/json"]["example"] == {"id": 1}
    public = built["paths"]["/health"]["get"]["responses"]
    assert sorted(public) == ["200", "502", "503", "504"]


def test_validate_schemas_describe_parameters_and_bodies_from_all_three_sources(tmp_path: Path) -> None:
    built = document(tmp_path)
    get = built["paths"]["/orders/{id}"]["get"]
    assert get["parameters"] == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"allOf": [{"type": "integer", "minimum": 0}, {"type": "integer", "maximum": 99}]},
        },
        {"name": "x-tenant", "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": "page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
    ]  # content-type: not a parameter OpenAPI lets a document describe
    body = built["paths"]["/orders"]["post"]["requestBody"]
    assert body == {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["sku"],
                    "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}},
                }
            }
        },
    }
    patch = built["paths"]["/orders/{id}"]["patch"]
    assert patch["parameters"][1] == {"name": "dry_run", "in": "query", "required": True, "schema": {"type": "boolean"}}
    assert patch["requestBody"] == {
        "required": False,
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {"note": {"type": ["string", "null"]}}}}
        },
    }  # the 3.0 `nullable` converted


def test_inlined_references_keep_their_siblings_and_stop_at_a_cycle() -> None:
    root = {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}}
    assert inline_schema({"$ref": "#/$defs/node", "description": "x"}, root) == {
        "allOf": [{"type": "object", "properties": {"next": {}}}],
        "description": "x",
    }
    assert inline_schema({"$ref": "#/$defs/missing"}, root) == {}


def test_the_notes_example_document_is_valid(tmp_path: Path) -> None:
    built = build(blueprints.load(ROOT / "examples" / "notes" / "blueprint.yaml"), "1")
    validate(built)
    assert built["paths"]["/admin/stats"]["get"]["security"] == [{"admin-token": ["notes:admin"]}]
