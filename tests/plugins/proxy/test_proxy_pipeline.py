"""The proxy handler through the real pipeline: nats-server, in-process stage hosts and gateway, real upstreams."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client

from backworks.contracts.errors import BlueprintError
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from tests.files import write_blueprint
from tests.serving import serving
from tests.stages import running_stages
from tests.upstreams import Upstream, running

MIB = 1024 * 1024


def blueprint(tmp_path: Path, proxy_config: str, handler_extra: str = "") -> blueprints.LoadedBlueprint:
    text = f"""\
name: proxied
gateway: {{max_body_bytes: {2 * MIB}}}
endpoints:
  api:
    path: /api/{{rest:path}}
    methods: [GET, POST]
    handler: {{type: proxy, {handler_extra}config: {proxy_config}}}
"""
    return blueprints.load(write_blueprint(tmp_path, text))


async def test_success_failures_and_ejection_through_the_pipeline(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    with running(Upstream("good")) as good, running(Upstream("bad", status=500)) as bad:
        config = (
            f'{{targets: [{{url: "{good.url}"}}, {{url: "{bad.url}"}}], strip_prefix: /api, retries: 0, '
            "passive_health: {consecutive_failures: 2, base_eject_s: 30}}"
        )
        loaded = blueprint(tmp_path, config)
        async with running_stages(loaded, nats_client), serving(loaded, nats_server) as (http, _):
            first = await http.post("/api/things?x=1", content=b"payload", headers={"x-request-id": "r1"})
            statuses = [(await http.get("/api/things")).status_code for _ in range(12)]
            bad.stop()  # now it refuses connections, but it is ejected: nobody notices
            after = [(await http.get("/api/things")).status_code for _ in range(4)]
    assert first.status_code == 200
    assert first.json() == {"upstream": "good", "method": "POST", "path": "/things", "body": "payload"}
    assert first.headers["x-upstream"] == "good"
    assert "keep-alive" not in first.headers
    seen = dict(good.last["headers"])
    assert seen["x-forwarded-for"] == "127.0.0.1", "httpx's ASGI transport reports the client as 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == "test"
    assert seen["forwarded"].endswith("host=test;proto=http")
    assert statuses.count(500) == 2, "two failures in a row eject the bad target"
    assert bad.hits == 2 and good.hits == 1 + 10 + 4
    assert after == [200] * 4


async def test_killed_and_slow_upstreams_are_502_and_504_naming_them(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    with running(Upstream("victim")) as victim:
        url = victim.url
        loaded = blueprint(
            tmp_path, f'{{targets: [{{url: "{url}"}}], retries: 0, timeout_ms: 300}}', "timeout_ms: 1000, "
        )
        async with running_stages(loaded, nats_client), serving(loaded, nats_server) as (http, _):
            alive = await http.get("/api/x")
            victim.delay = 3.0
            slow = await http.get("/api/x")
            victim.delay = 0.0
            victim.stop()
            killed = await http.get("/api/x")
    assert alive.status_code == 200
    assert slow.status_code == 504, slow.text
    assert slow.headers["content-type"] == "application/problem+json"
    assert slow.json()["target"] == url and slow.json()["stage"] == "api-handler.request"
    assert killed.status_code == 502, killed.text
    assert killed.json()["target"] == url and url in killed.json()["detail"]


async def test_large_bodies_pass_both_ways_and_an_oversize_upstream_body_is_502(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    with running(Upstream("big", body_size=3 * MIB)) as big:
        loaded = blueprint(tmp_path, f'{{targets: [{{url: "{big.url}"}}]}}')
        async with running_stages(loaded, nats_client), serving(loaded, nats_server) as (http, _):
            fits = await http.post("/api/upload", content=b"y" * (2 * MIB))
            uploaded = len(big.last["body"])
            big.body_size = 7 * MIB
            oversize = await http.get("/api/download")
    assert fits.status_code == 200 and len(fits.content) == 3 * MIB
    assert uploaded == 2 * MIB
    assert oversize.status_code == 502
    assert "more than the" in oversize.json()["detail"] and "max_payload" in oversize.json()["detail"]


def test_validate_refuses_tries_that_do_not_fit_the_stage_limit(tmp_path: Path) -> None:
    with pytest.raises(BlueprintError) as raised:
        blueprint(
            tmp_path, '{targets: [{url: "http://127.0.0.1:9"}], timeout_ms: 2000, retries: 2}', "timeout_ms: 3000, "
        )
    (issue,) = raised.value.issues
    assert issue.line == 7 and issue.plugin == "api-handler"
    assert "2000 * 3 tries = 6000 ms does not fit in the stage's time limit of 3000 ms" in issue.message
