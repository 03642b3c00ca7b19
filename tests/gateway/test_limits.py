"""Limits the gateway checks against the broker's: a body within ``max_body_bytes`` that NATS cannot carry."""

from __future__ import annotations

from pathlib import Path

import structlog
from nats.aio.client import Client
from structlog.testing import capture_logs

from backworks.pipeline import blueprints
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages

BLUEPRINT = """name: big
gateway: {max_body_bytes: 8000000}
endpoints:
  e: {path: /x, methods: [POST], handler: {type: mock, config: {body: ok}}}
"""


async def test_a_body_the_broker_cannot_carry_is_a_413_problem_and_the_start_says_so(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with running_stages(loaded, nats_client), gateway(loaded) as (http, _):
            fits = await http.post("/x", content=b"x" * 1000)
            too_big = await http.post("/x", content=b"x" * 7_000_000)  # within the limit; base64 makes it 9.3 MB
    assert fits.status_code == 200
    assert too_big.status_code == 413, too_big.text
    assert too_big.headers["content-type"] == "application/problem+json"
    assert "max_payload" in too_big.json()["detail"]
    assert any("max_payload" in str(line["event"]) and line["log_level"] == "warning" for line in logs)
