from __future__ import annotations

import json
from typing import Any

import pytest

from backworks.contracts.envelope import Envelope, HttpResponse, Principal, Timing
from backworks.pipeline.configs import validate_config
from backworks.pipeline.plugin import Continue, Fail, Respond
from backworks.plugins.transform import Transform
from backworks.plugins.transform.config import TransformConfig
from backworks.plugins.transform.pointers import PointerError, remove, rename, set_value


def plugin(**config: Any) -> Transform:
    model, problems = validate_config(TransformConfig, config)
    assert model is not None, problems
    assert isinstance(model, TransformConfig)
    return Transform(model, instance="t")


def request(body: Any = None, content_type: str = "application/json", **fields: Any) -> Envelope:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    headers = [("content-type", content_type), ("content-length", str(len(raw))), *fields.pop("headers", [])]
    return Envelope(
        route="r",
        method="POST",
        path="/notes/7",
        path_params={"id": "7"},
        headers=headers,
        body=raw,
        principal=Principal(consumer="alice"),
        **fields,
    )


async def through_request(transform: Transform, envelope: Envelope) -> Envelope:
    action = await transform.process_request(envelope)
    assert isinstance(action, Continue), action
    return action.envelope


async def test_request_headers_remove_rename_and_set_with_templates() -> None:
    transform = plugin(
        request={
            "headers": {
                "remove": ["X-Internal"],
                "rename": {"X-Old": "X-New"},
                "set": {"X-Consumer": "{principal.consumer}", "X-Note": "note-{path.id}-{query.v}-{header.x-old}"},
            }
        }
    )
    envelope = request(headers=[("x-internal", "1"), ("x-old", "kept"), ("x-consumer", "forged")], query=[("v", "2")])
    headers = dict((await through_request(transform, envelope)).headers)
    assert "x-internal" not in headers and "x-old" not in headers
    assert headers["x-new"] == "kept"
    assert headers["x-consumer"] == "alice", "set replaces what the client sent"
    assert headers["x-note"] == "note-7-2-kept", "values render from the request as it arrived"


async def test_query_remove_rename_and_set() -> None:
    transform = plugin(
        request={"query": {"remove": ["debug"], "rename": {"q": "search"}, "set": {"owner": "{principal.consumer}"}}}
    )
    envelope = request(query=[("debug", "1"), ("q", "a"), ("q", "b"), ("owner", "mallory")])
    assert (await through_request(transform, envelope)).query == [("search", "a"), ("search", "b"), ("owner", "alice")]


async def test_request_body_edits_with_escaped_pointers_and_created_objects() -> None:
    transform = plugin(
        request={
            "body": {
                "remove": ["/secret", "/absent/deep"],
                "rename": {"/a~1b": "/meta/a~0b", "/missing": "/x"},
                "set": {
                    "/meta/source/by": "{principal.consumer}",
                    "/tags/-": "new",
                    "/tags/0": "first",
                    "/id": "{path.id}",
                },
            }
        }
    )
    envelope = request({"secret": "s", "a/b": 1, "tags": ["old"]})
    out = await through_request(transform, envelope)
    assert json.loads(out.body) == {
        "tags": ["first", "new"],
        "meta": {"a~b": 1, "source": {"by": "alice"}},
        "id": "7",
    }
    assert out.header("content-length") is None, "a stale Content-Length is dropped, never recomputed here"


async def test_an_empty_request_body_is_left_alone() -> None:
    out = await through_request(plugin(request={"body": {"set": {"/a": 1}}}), request(None))
    assert out.body == b""


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (b"a=1", "application/x-www-form-urlencoded", 415, "must be JSON"),
        (b'{"a": ', "application/json", 400, "not valid JSON"),
        ({"meta": "text"}, "application/json", 400, "/meta/source: /meta is a string, not an object or array"),
        ([1], "application/json", 400, "'meta' is not an array index"),
        ("just a string", "application/json", 400, "a single JSON value"),
    ],
)
async def test_request_body_problems_are_answered_with_problem_json(
    body: Any, content_type: str, status: int, detail: str
) -> None:
    transform = plugin(request={"body": {"set": {"/meta/source": "gw"}}})
    action = await transform.process_request(request(body, content_type=content_type))
    assert isinstance(action, Respond) and action.response.status == status
    assert action.response.header("content-type") == "application/problem+json"
    assert detail in json.loads(action.response.body)["detail"]


async def test_a_templated_header_value_cannot_inject_a_line_break() -> None:
    transform = plugin(request={"headers": {"set": {"x-q": "{query.q}"}}})
    action = await transform.process_request(request(query=[("q", "a\r\nx-admin: 1")]))
    assert isinstance(action, Respond) and action.response.status == 400


def reached(envelope: Envelope, response: HttpResponse) -> Envelope:
    """The envelope on its way back, after this instance's request stage ran."""
    envelope.timings.append(Timing(stage="t.request", ms=0.1))
    envelope.response = response
    return envelope


async def test_response_headers_and_body_are_edited() -> None:
    headers = {
        "remove": ["server"],
        "rename": {"x-upstream-id": "x-request-ref"},
        "set": {"x-owner": "{principal.consumer}"},
    }
    body = {"remove": ["/internal"], "rename": {"/n": "/count"}, "set": {"/links/self": "/notes/{path.id}"}}
    transform = plugin(response={"headers": headers, "body": body})
    given = [("content-type", "application/json"), ("server", "x"), ("x-upstream-id", "u1"), ("content-length", "9")]
    response = HttpResponse(headers=given, body=b'{"n": 3, "internal": true}')
    action = await transform.process_response(reached(request(), response))
    assert isinstance(action, Continue) and action.envelope.response is not None
    out = action.envelope.response
    assert json.loads(out.body) == {"count": 3, "links": {"self": "/notes/7"}}
    assert dict(out.headers) == {"content-type": "application/json", "x-request-ref": "u1", "x-owner": "alice"}


async def test_a_response_that_cannot_be_edited_fails_the_stage() -> None:
    transform = plugin(response={"body": {"set": {"/a": 1}}})
    response = HttpResponse(headers=[("content-type", "text/html")], body=b"<p>hi</p>")
    action = await transform.process_response(reached(request(), response))
    assert isinstance(action, Fail)
    assert "cannot transform the response" in action.reason and "must be JSON" in action.reason


async def test_an_answer_given_before_this_stage_is_left_as_it_was() -> None:
    transform = plugin(response={"headers": {"set": {"x-a": "1"}}, "body": {"set": {"/a": 1}}})
    envelope = request()
    envelope.response = HttpResponse(status=401, headers=[("content-type", "application/problem+json")], body=b"{}")
    action = await transform.process_response(envelope)
    assert isinstance(action, Continue) and action.envelope.response is not None
    assert action.envelope.response.body == b"{}" and action.envelope.response.header("x-a") is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"request": {"body": {"remove": ["name"]}}}, "must start with '/'"),
        ({"request": {"body": {"set": {"/a~2": 1}}}}, "'~' not followed by 0 or 1"),
        ({"request": {"headers": {"set": {"bad header": "x"}}}}, "is not a header name"),
        ({"response": {"query": {}}}, "unknown key 'query'"),
    ],
)
def test_config_errors_at_load(config: dict[str, Any], message: str) -> None:
    model, problems = validate_config(TransformConfig, config)
    assert model is None
    assert message in problems[0].message, problems


def test_pointer_escapes_follow_rfc_6901() -> None:
    document: dict[str, Any] = {"a/b": {"m~n": 1}, "list": [0, 1, 2]}
    rename(document, "/a~1b/m~0n", "/x~1y")
    assert document == {"a/b": {}, "list": [0, 1, 2], "x/y": 1}
    assert remove(document, "/list/1") == 1 and document["list"] == [0, 2]
    set_value(document, "/list/-", 9)
    assert document["list"] == [0, 2, 9]
    with pytest.raises(PointerError, match="past the end"):
        set_value(document, "/list/7", 1)
    with pytest.raises(PointerError, match="not an array index"):
        set_value(document, "/list/01", 1)


async def test_a_rename_replaces_what_had_the_new_name() -> None:
    transform = plugin(request={"headers": {"rename": {"x-a": "x-b"}}, "query": {"rename": {"a": "b"}}})
    envelope = request(headers=[("x-a", "1"), ("x-b", "old")], query=[("b", "old"), ("a", "1"), ("a", "2")])
    out = await through_request(transform, envelope)
    assert [(k, v) for k, v in out.headers if k.startswith("x-")] == [("x-b", "1")]
    assert out.query == [("b", "1"), ("b", "2")]
    untouched = await through_request(transform, request(headers=[("x-b", "kept")]))
    assert untouched.header("x-b") == "kept", "nothing is replaced when the old name is absent"
