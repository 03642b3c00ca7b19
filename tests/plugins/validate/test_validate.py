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

NOTE = {
    "type": "object",
    "required": ["title", "tags"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "a/b": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
    },
    "additionalProperties": False,
}


def plugin(folder: Path | None = None, **config: Any) -> Validate:
    model, problems = validate_config(ValidateConfig, config, folder)
    assert model is not None, problems
    assert isinstance(model, ValidateConfig)
    return Validate(model, instance="v")


def request(body: bytes = b"", content_type: str | None = "application/json", **fields: Any) -> Envelope:
    headers = [("content-type", content_type)] if content_type else []
    return Envelope(
        route="r", method="POST", path="/notes", headers=headers + fields.pop("headers", []), body=body, **fields
    )


async def refused(plugin: Validate, envelope: Envelope, status: int) -> dict[str, Any]:
    action = await plugin.process_request(envelope)
    assert isinstance(action, Respond), "the request should have been refused"
    assert action.response.status == status
    assert action.response.header("content-type") == "application/problem+json"
    body: dict[str, Any] = json.loads(action.response.body)
    return body


def pointers(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(error["pointer"], error["keyword"]) for error in body["errors"]]


async def test_a_valid_request_goes_on_unchanged() -> None:
    envelope = request(json.dumps({"title": "t", "tags": ["a"]}).encode(), query=[("limit", "5")])
    action = await plugin(body=NOTE, query={"limit": {"type": "integer"}}).process_request(envelope)
    assert isinstance(action, Continue) and action.envelope is envelope


async def test_422_lists_every_body_violation_with_its_pointer() -> None:
    body = {"title": "", "tags": ["ok", 3, None], "a/b": "x", "email": "not-an-email", "extra": 1}
    problem = await refused(plugin(body=NOTE), request(json.dumps(body).encode()), 422)
    assert problem["title"] == "Invalid request" and problem["error_count"] == 6
    assert sorted(pointers(problem)) == [
        ("/body", "additionalProperties"),
        ("/body/a~1b", "type"),
        ("/body/email", "format"),
        ("/body/tags/1", "type"),
        ("/body/tags/2", "type"),
        ("/body/title", "minLength"),
    ]
    assert "6 violation(s)" in problem["detail"]


async def test_missing_required_properties_point_at_each_property() -> None:
    problem = await refused(plugin(body=NOTE), request(b"{}"), 422)
    assert pointers(problem) == [("/body/title", "required"), ("/body/tags", "required")]
    assert all(error["detail"] == "is required" for error in problem["errors"])


async def test_parameters_are_coerced_then_validated_and_every_location_is_reported() -> None:
    validate = plugin(
        path={"id": {"type": "integer", "minimum": 1}},
        query={
            "limit": {"type": "integer", "maximum": 100},
            "draft": {"type": "boolean"},
            "tag": {"type": "array", "items": {"type": "integer"}},
        },
        headers={"X-Tenant": {"type": "string", "pattern": "^[a-z]+$"}},
        required={"query": ["limit"], "headers": ["x-tenant", "x-trace"]},
    )
    ok = request(
        path_params={"id": "7"},
        query=[("limit", "100"), ("draft", "true"), ("tag", "1"), ("tag", "2")],
        headers=[("x-tenant", "acme"), ("x-trace", "anything")],
    )
    assert isinstance(await validate.process_request(ok), Continue)
    bad = request(
        path_params={"id": "0"},
        query=[("draft", "yes"), ("tag", "1"), ("tag", "two")],
        headers=[("x-tenant", "Secret-Token-Value")],
    )
    problem = await refused(validate, bad, 422)
    assert pointers(problem) == [
        ("/path/id", "minimum"),
        ("/query/limit", "required"),
        ("/query/draft", "type"),
        ("/query/tag/1", "type"),
        ("/headers/x-tenant", "pattern"),
        ("/headers/x-trace", "required"),
    ]
    assert "Secret-Token-Value" not in json.dumps(problem), "header values are never echoed"


async def test_a_scalar_parameter_given_twice_is_a_violation() -> None:
    validate = plugin(query={"limit": {"type": "integer"}})
    problem = await refused(validate, request(query=[("limit", "1"), ("limit", "2")]), 422)
    assert pointers(problem) == [("/query/limit", "type")]
    assert "given 2 times" in problem["errors"][0]["detail"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
async def test_a_body_that_is_not_json_is_415(content_type: str | None) -> None:
    problem = await refused(plugin(body=NOTE), request(b'{"title": "t"}', content_type=content_type), 415)
    assert problem["title"] == "Unsupported media type"
    assert "application/json" in problem["detail"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
async def test_json_media_types_with_parameters_and_plus_json_are_accepted(content_type: str) -> None:
    envelope = request(b'{"title": "t", "tags": []}', content_type=content_type)
    assert isinstance(await plugin(body=NOTE).process_request(envelope), Continue)


@pytest.mark.parametrize("body", [b'{"title": ', b"{'title': 1}", b'{"n": NaN}', b"\xff\xfe\x00"])
async def test_malformed_json_is_400(body: bytes) -> None:
    problem = await refused(plugin(body=NOTE), request(body), 400)
    assert problem["title"] == "Malformed JSON"
    assert problem["detail"].startswith("the request body is not valid JSON")


async def test_an_empty_body_is_a_violation_unless_the_body_is_optional() -> None:
    problem = await refused(plugin(body=NOTE), request(content_type=None), 422)
    assert pointers(problem) == [("/body", "required")]
    assert isinstance(await plugin(body=NOTE, body_required=False).process_request(request()), Continue)


async def test_the_list_is_capped_and_says_how_many_there_were() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    problem = await refused(plugin(body=schema, max_errors=3), request(json.dumps(["x"] * 10).encode()), 422)
    assert len(problem["errors"]) == 3 and problem["error_count"] == 10
    assert "(the first 3 are listed)" in problem["detail"]


async def test_a_schema_can_come_from_a_file_next_to_the_blueprint(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "note.yaml").write_text("type: object\nrequired: [title]\n")
    validate = plugin(tmp_path, body={"file": "schemas/note.yaml"})
    problem = await refused(validate, request(b"{}"), 422)
    assert pointers(problem) == [("/body/title", "required")]


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        ({"body": {"type": "strin"}}, ("body", "type"), "'strin' is not one of"),
        ({"query": {"limit": {"minimum": "one"}}}, ("query", "limit", "minimum"), "'one' is not of type 'number'"),
        ({"body": {"$ref": "#/$defs/missing"}}, ("body",), "points to nothing"),
        ({"body": {"$ref": "https://example.com/s.json"}}, ("body",), "is not local"),
        ({"body": {"file": "nope.json"}}, ("body",), "cannot read file 'nope.json'"),
        ({"body": {"file": "bad.json"}}, ("body",), "schema file 'bad.json' is not a valid JSON Schema at /type"),
        ({"operation": "x"}, ("openapi",), "go together"),
        ({}, (), "nothing to validate"),
        ({"body": {}, "max_errors": 0}, ("max_errors",), "less than the minimum of 1"),
    ],
)
def test_bad_schemas_are_config_errors_at_load(
    tmp_path: Path, config: dict[str, Any], path: tuple[str, ...], message: str
) -> None:
    (tmp_path / "bad.json").write_text('{"type": 12}')
    model, problems = validate_config(ValidateConfig, config, tmp_path)
    assert model is None
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message
