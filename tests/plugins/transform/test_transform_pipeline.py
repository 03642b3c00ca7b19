"""``transform`` through the real pipeline: a response it cannot edit fails the request instead of leaking."""

from __future__ import annotations

from pathlib import Path

from nats.aio.client import Client

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from tests.files import write_blueprint
from tests.serving import serving
from tests.stages import running_stages

BLUEPRINT = """name: api
plugins:
  shape:
    type: transform
    config:
      request: {headers: {set: {x-note: "{path.id}"}}}
      response: {headers: {remove: [x-internal]}, body: {set: {/id: "{path.id}"}}}
endpoints:
  json: {path: "/json/{id}", plugins: [shape], handler: {type: mock, config: {body: {echo: "{header.x-note}"},
         headers: {x-internal: secret}}}}
  html: {path: "/html/{id}", plugins: [shape], handler: {type: mock, config: {body: "<p>hi</p>",
         headers: {x-internal: secret}}}}
"""


async def test_edits_reach_the_handler_and_an_uneditable_response_is_a_502(
    nats_server: EmbeddedNats, nats_client: Client, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    async with running_stages(loaded, nats_client), serving(loaded, nats_server) as (http, _):
        ok = await http.get("/json/7")
        html = await http.get("/html/7")
    assert ok.status_code == 200
    assert ok.json() == {"echo": "7", "id": "7"}
    assert "x-internal" not in ok.headers
    assert html.status_code == 502, html.text
    assert html.headers["content-type"] == "application/problem+json"
    assert html.json()["detail"] == "stage shape.response failed: the plugin failed", "its reason stays in the log"
    assert "x-internal" not in html.headers and "secret" not in html.text
