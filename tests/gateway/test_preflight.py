"""CORS preflights reach the cors stage of the endpoint serving the requested method, through the real pipeline."""

from __future__ import annotations

from pathlib import Path

from nats.aio.client import Client

from backworks.pipeline import blueprints
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages

BLUEPRINT = """name: api
plugins:
  read-cors: {type: cors, config: {allow_origins: ["https://app.test"], allow_methods: [GET]}}
  write-cors: {type: cors, config: {allow_origins: ["https://app.test"], allow_methods: [POST]}}
endpoints:
  list: {path: /notes, methods: [GET], plugins: [read-cors], handler: {type: mock, config: {body: [1]}}}
  make: {path: /notes, methods: [POST], plugins: [write-cors], handler: {type: mock, config: {status: 201}}}
  plain: {path: /plain, handler: {type: mock}}
"""


def stages(response_timing: str) -> list[str]:
    return [entry.split(";")[0].strip() for entry in response_timing.split(",")]


async def test_preflights_go_to_the_endpoint_serving_the_requested_method(
    gateway: Gateway, nats_client: Client, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    origin = {"origin": "https://app.test"}
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, _):
        post = await http.options("/notes", headers={**origin, "access-control-request-method": "POST"})
        get = await http.options("/notes", headers={**origin, "access-control-request-method": "GET"})
        delete = await http.options("/notes", headers={**origin, "access-control-request-method": "DELETE"})
        plain_options = await http.options("/notes")
        no_cors = await http.options("/plain", headers={**origin, "access-control-request-method": "GET"})
        actual = await http.get("/notes", headers=origin)
    assert post.status_code == 204, post.text
    assert post.headers["access-control-allow-methods"] == "POST"
    assert stages(post.headers["server-timing"]) == ["write-cors.request", "write-cors.response", "total"], (
        "answered by cors: the handler never sees a preflight"
    )
    assert get.status_code == 204 and get.headers["access-control-allow-methods"] == "GET"
    assert stages(get.headers["server-timing"]) == ["read-cors.request", "read-cors.response", "total"]
    assert delete.status_code == 403 and delete.headers["content-type"] == "application/problem+json"
    assert not [h for h in delete.headers if h.startswith("access-control-")]
    assert plain_options.status_code == 405, "an OPTIONS that is not a preflight is not sent to a handler"
    assert plain_options.headers["allow"] == "GET, OPTIONS, POST"
    assert no_cors.status_code == 405, "endpoints without cors are routed as before"
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == "https://app.test"
    assert stages(actual.headers["server-timing"]) == [
        "read-cors.request",
        "list-handler.request",
        "read-cors.response",
        "total",
    ]
