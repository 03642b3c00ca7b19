from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from textwrap import dedent

import pytest
import structlog
from structlog.testing import capture_logs

from backworks.contracts.envelope import Envelope, Principal, Stage
from backworks.contracts.errors import BlueprintError
from backworks.contracts.names import Phase
from backworks.pipeline import blueprints
from backworks.pipeline.configs import ConfigContext
from backworks.pipeline.plugin import Continue, Respond
from backworks.plugins.python import Python, Request
from backworks.plugins.python.config import PythonConfig
from tests.files import write_blueprint
from tests.waiting import eventually

APP = """
import asyncio
import threading

from backworks.plugins.python import HTTPError, Response

EVENTS = []


def startup():
    EVENTS.append("startup")


async def shutdown():
    EVENTS.append("shutdown")


def as_dict(request):
    return {"thread": threading.current_thread().name, "id": request.path_params.get("id")}


async def as_list(request):
    return [threading.current_thread().name, request.method]


def pair(request):
    return 201, {"created": True}


def triple(request):
    return 202, "accepted", {"X-Trace": "t1"}


def full(request):
    return Response(b"\\x00\\x01", status=200, headers=[("x-a", "1")], content_type="application/x-thing")


def echo(request):
    return {
        "query": dict(request.query),
        "query_list": dict(request.query_list),
        "agent": request.headers["USER-AGENT"],
        "json": request.json(),
        "consumer": request.principal.consumer if request.principal else None,
        "scopes": list(request.principal.scopes) if request.principal else None,
        "request_id": request.request_id,
    }


def boom(request):
    raise ValueError("database password is hunter2")


def not_found(request):
    raise HTTPError(404, "no note 7")


def returns_text(request):
    return "plain text is not a response shape"


def no_content(request):
    return 204, None


GATE = threading.Event()
RUNNING = []


def gated(request):
    RUNNING.append(1)
    try:
        GATE.wait(30)
    finally:
        RUNNING.pop()
    return {}


def wrong_error(request):
    raise HTTPError(200, "not an error status")
"""


def envelope(**fields: object) -> Envelope:
    values: dict[str, object] = {
        "route": "r",
        "method": "GET",
        "path": "/x",
        "request_id": "req-1",
        "itinerary": [Stage(instance="app-handler", phase=Phase.REQUEST, critical=True)],
    }
    values.update(fields)
    return Envelope.model_validate(values)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    # A unique module name per test: the private module name derives from the folder, which is unique per test.
    (tmp_path / "notes_app.py").write_text(dedent(APP))
    return tmp_path


def config(folder: Path, function: str, **context: object) -> PythonConfig:
    given = ConfigContext(instance="app-handler", blueprint_dir=folder, **context)  # type: ignore[arg-type]  # test
    return PythonConfig.model_validate({"function": function}, context=given)


async def started(folder: Path, function: str) -> Python:
    plugin = Python(config(folder, function), instance="app-handler")
    await plugin.startup()
    return plugin


async def answer(plugin: Python, env: Envelope | None = None) -> tuple[int, dict[str, str], bytes]:
    action = await plugin.handle(env or envelope())
    assert isinstance(action, (Continue, Respond))
    response = action.envelope.response if isinstance(action, Continue) else action.response
    assert response is not None
    return response.status, dict(response.headers), response.body


@pytest.mark.parametrize(
    ("function", "status", "content_type", "body"),
    [
        ("pair", 201, "application/json", b'{"created": true}'),
        ("triple", 202, "text/plain; charset=utf-8", b"accepted"),
        ("full", 200, "application/x-thing", b"\x00\x01"),
        ("no_content", 204, None, b""),
    ],
)
async def test_each_supported_return_shape(
    app_dir: Path, function: str, status: int, content_type: str | None, body: bytes
) -> None:
    plugin = await started(app_dir, f"notes_app:{function}")
    try:
        got_status, headers, got_body = await answer(plugin)
    finally:
        await plugin.shutdown()
    assert (got_status, headers.get("content-type"), got_body) == (status, content_type, body)
    if function == "triple":
        assert headers["x-trace"] == "t1"
    if function == "full":
        assert headers["x-a"] == "1"


async def test_sync_functions_run_in_the_pool_and_async_ones_on_the_loop(app_dir: Path) -> None:
    sync = await started(app_dir, "notes_app:as_dict")
    asynchronous = await started(app_dir, "notes_app:as_list")
    try:
        status, headers, body = await answer(sync, envelope(path_params={"id": "7"}))
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"thread": json.loads(body)["thread"], "id": "7"}
        assert json.loads(body)["thread"].startswith("backworks-app-handler")
        _, _, body = await answer(asynchronous)
        assert json.loads(body) == [threading.current_thread().name, "GET"]
    finally:
        await sync.shutdown()
        await asynchronous.shutdown()


async def test_the_request_carries_query_headers_body_principal_and_request_id(app_dir: Path) -> None:
    plugin = await started(app_dir, "notes_app:echo")
    env = envelope(
        query=[("tag", "a"), ("tag", "b"), ("q", "x")],
        headers=[("user-agent", "curl/8")],
        body=b'{"title": "hi"}',
        principal=Principal(consumer="ann", scopes=["notes:write"]),
    )
    try:
        _, _, body = await answer(plugin, env)
    finally:
        await plugin.shutdown()
    assert json.loads(body) == {
        "query": {"tag": "a", "q": "x"},
        "query_list": {"tag": ["a", "b"], "q": ["x"]},
        "agent": "curl/8",
        "json": {"title": "hi"},
        "consumer": "ann",
        "scopes": ["notes:write"],
        "request_id": "req-1",
    }


async def test_an_exception_is_a_500_naming_the_stage_without_its_text_and_is_logged_with_the_request_id(
    app_dir: Path,
) -> None:
    plugin = await started(app_dir, "notes_app:boom")
    bound = structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            status, headers, body = await answer(plugin)
    finally:
        structlog.contextvars.reset_contextvars(**bound)
        await plugin.shutdown()
    assert status == 500
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["stage"] == "app-handler.request"
    assert problem["request_id"] == "req-1"
    assert "hunter2" not in body.decode() and "ValueError" not in body.decode()
    (entry,) = [e for e in logs if e["event"] == "handler function raised"]
    assert entry["request_id"] == "req-1"
    assert entry["function"] == "notes_app:boom"
    assert isinstance(entry["exc_info"], ValueError)


async def test_http_error_and_bad_json_are_problems_of_their_status(app_dir: Path) -> None:
    not_found = await started(app_dir, "notes_app:not_found")
    echo = await started(app_dir, "notes_app:echo")
    try:
        status, _, body = await answer(not_found)
        assert (status, json.loads(body)["detail"], json.loads(body)["title"]) == (404, "no note 7", "Not Found")
        status, _, body = await answer(echo, envelope(body=b"{not json", headers=[("user-agent", "x")]))
        assert status == 400 and "not valid JSON" in json.loads(body)["detail"]
    finally:
        await not_found.shutdown()
        await echo.shutdown()


@pytest.mark.parametrize(
    ("function", "event", "logged"),
    [
        ("returns_text", "handler function returned an unsupported value", "return a dict or list"),
        ("wrong_error", "handler function raised", "error status from 400 to 599"),
    ],
)
async def test_a_result_that_is_no_response_is_a_500_logged_with_what_to_do(
    app_dir: Path, function: str, event: str, logged: str
) -> None:
    plugin = await started(app_dir, f"notes_app:{function}")
    try:
        with capture_logs() as logs:
            status, _, _ = await answer(plugin)
    finally:
        await plugin.shutdown()
    assert status == 500
    (entry,) = [e for e in logs if e["event"] == event]
    assert logged in str(entry["exc_info"])


async def test_module_startup_and_shutdown_run_once_per_process_for_all_instances(app_dir: Path) -> None:
    first = await started(app_dir, "notes_app:as_dict")
    second = await started(app_dir, "notes_app:pair")
    module = first.target.module if first.target else None
    assert module is not None and module is (second.target.module if second.target else None)
    assert module.EVENTS == ["startup"]
    await first.shutdown()
    assert module.EVENTS == ["startup"], "another instance still uses the module"
    await second.shutdown()
    assert module.EVENTS == ["startup", "shutdown"]


def test_a_module_named_like_the_standard_library_does_not_shadow_it(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("import helper\n\ndef handle(request):\n    return helper.VALUE\n")
    (tmp_path / "helper.py").write_text("VALUE = {'from': 'helper'}\n")
    before = list(sys.path)
    cfg = config(tmp_path, "json:handle")
    assert sys.modules["json"] is json, "the standard library's json is still the one imported"
    assert sys.path == before, "the blueprint folder was only on sys.path while importing"
    assert cfg.folders == (tmp_path,)


async def test_sync_calls_run_at_most_the_instance_concurrency_limit_at_once(app_dir: Path) -> None:
    plugin = Python(config(app_dir, "notes_app:gated", max_concurrent=3), instance="app-handler")
    await plugin.startup()
    module = plugin.target.module if plugin.target else None
    assert module is not None
    calls = [asyncio.ensure_future(plugin.handle(envelope())) for _ in range(6)]
    try:
        await eventually(lambda: len(module.RUNNING) == 3)
        await asyncio.sleep(0.2)
        assert len(module.RUNNING) == 3, "three threads at most; the other calls wait for one"
    finally:
        module.GATE.set()
        results = await asyncio.gather(*calls)
        await plugin.shutdown()
    assert all(isinstance(result, Continue) for result in results)


def test_validate_reports_module_function_and_signature_problems_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "svc.py").write_text("def two(a, b):\n    return {}\n\ndef ok(request):\n    return {}\n")
    (tmp_path / "broken.py").write_text("def oops(:\n")
    path = write_blueprint(
        tmp_path,
        dedent("""\
            name: py
            plugin_dirs: [handlers]
            endpoints:
              a:
                path: /a
                handler: {type: python, config: {function: "missing_mod:f"}}
              b:
                path: /b
                handler: {type: python, config: {function: "svc:nothere"}}
              c:
                path: /c
                handler: {type: python, config: {function: "svc:two"}}
              d:
                path: /d
                handler: {type: python, config: {function: "broken:oops"}}
              e:
                path: /e
                handler: {type: python, config: {function: "svc:ok"}}
        """),
    )
    with pytest.raises(BlueprintError) as raised:
        blueprints.load(path)
    issues = {issue.pointer: issue for issue in raised.value.issues}
    assert set(issues) == {f"/endpoints/{name}/handler/config/function" for name in "abcd"}
    assert issues["/endpoints/a/handler/config/function"].line == 6
    assert "module 'missing_mod' not found" in issues["/endpoints/a/handler/config/function"].message
    assert issues["/endpoints/b/handler/config/function"].line == 9
    assert "has no function 'nothere'; it defines: ok, two" in issues["/endpoints/b/handler/config/function"].message
    assert issues["/endpoints/c/handler/config/function"].line == 12
    assert "exactly one positional parameter" in issues["/endpoints/c/handler/config/function"].message
    assert issues["/endpoints/d/handler/config/function"].line == 15
    assert "SyntaxError" in issues["/endpoints/d/handler/config/function"].message
    assert "broken.py:1" in issues["/endpoints/d/handler/config/function"].message


def test_request_headers_are_case_insensitive_and_keep_repeats() -> None:
    request = Request.from_envelope(envelope(headers=[("x-a", "1"), ("X-A", "2"), ("accept", "*/*")]))
    assert request.headers["X-a"] == "1"
    assert request.headers.get_list("x-A") == ["1", "2"]
    assert "ACCEPT" in request.headers and len(request.headers) == 2
