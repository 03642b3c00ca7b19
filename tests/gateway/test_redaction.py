"""No secret in clear at the edge: a failing plugin's config secrets and the request's credentials never reach the
502 body, the event stream, the logs or the health report; its exception text reaches the client only with
``gateway.expose_errors``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from backworks.contracts.events import StageEvent
from backworks.pipeline import blueprints, credentials, logs, secrets
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.secrets import MASK
from tests.files import write_blueprint
from tests.samples import LEAKY_CONFIG, LEAKY_SOURCE, QUERY_CREDENTIAL, REQUEST_CREDENTIALS, leaks, write_plugin_file
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

BLUEPRINT = """name: leaks
plugin_dirs: [local]
gateway: {{expose_errors: {expose}}}
plugins:
  leaky:
    type: leaky
    config: {config}
    timeout_ms: 4000  # a generous limit: a replica slowed by a loaded machine is not routed around as stalled
    breaker: {{sliding_window: {{size: 2}}, minimum_calls: 2, failure_rate: 100, wait_in_open_ms: 60000}}
endpoints:
  e: {{path: /x, plugins: [leaky], handler: {{type: mock, config: {{body: ok}}}}}}
"""
CAUSE = "stage leaky.request failed: the plugin failed"
SERVICE_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    logs.TRACEBACKS,
    secrets.mask_secrets,
    credentials.mask_credentials,
]
"""What every service's log chain does before rendering (``backworks.pipeline.logs.configure``)."""


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    secrets.forget_all()
    credentials.forget_declared()


def load(tmp_path: Path, expose: bool = False) -> LoadedBlueprint:
    write_plugin_file(tmp_path, "leaky.py", LEAKY_SOURCE)
    text = BLUEPRINT.format(expose=json.dumps(expose), config=json.dumps(LEAKY_CONFIG))
    return blueprints.load(write_blueprint(tmp_path, text))


async def test_a_failing_plugin_shows_no_secret_in_its_502_its_events_its_logs_or_health(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = load(tmp_path)
    events: list[StageEvent] = []

    async def collect(msg: Msg) -> None:
        events.append(StageEvent.model_validate_json(msg.data))

    await nats_client.subscribe("bw.evt.>", cb=collect)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, _):
        with capture_logs(processors=SERVICE_PROCESSORS) as lines:
            failed = await http.get(
                "/x", params={"api_key": QUERY_CREDENTIAL}, headers={**REQUEST_CREDENTIALS, "x-request-id": "req-leak"}
            )
        assert failed.status_code == 502
        assert leaks(failed.text) == []
        assert failed.json()["detail"] == CAUSE, "the stage and a short cause, not the exception's text"
        assert "RuntimeError" not in failed.text and "db refused" not in failed.text
        assert failed.json()["stage"] == "leaky.request" and failed.json()["cause"] == "error"

        # The exception's text goes to the log, with the request id, masked.
        raised = [line for line in lines if line["event"] == "plugin hook raised"]
        assert raised and raised[0]["request_id"] == "req-leak"
        assert raised[0]["error"].startswith(f"RuntimeError: db refused {MASK} for token {MASK}")
        assert leaks(json.dumps(lines, default=str)) == [], "no log line, traceback included, shows a secret"
        assert any("exception" in line for line in raised), "the traceback is logged (without locals)"

        await eventually(lambda: len(events) >= 1)
        assert events[0].stage == "leaky.request" and MASK in events[0].message
        assert leaks(json.dumps([event.model_dump(mode="json") for event in events])) == []

        # Health: the plugin's health message and the breaker's record of the last failure.
        assert (await http.get("/x", headers=REQUEST_CREDENTIALS)).status_code == 502

        async def breaker_reported() -> bool:
            report = (await http.get("/_backworks/health")).json()["stages"]["leaky.request"]
            return report["breaker"]["state"] == "open" and bool(report["replicas"])

        await eventually(breaker_reported)
        health = (await http.get("/_backworks/health")).json()["stages"]["leaky.request"]
        assert health["replicas"][0]["message"] == f"db at postgres://app:{MASK}@db"
        assert "db refused" in health["breaker"]["reason"], "the breaker keeps its (masked) reason"
        assert leaks(json.dumps(health)) == []


async def test_expose_errors_puts_the_masked_exception_text_in_the_problem(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = load(tmp_path, expose=True)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, _):
        failed = await http.get("/x", params={"api_key": QUERY_CREDENTIAL}, headers=REQUEST_CREDENTIALS)
    assert failed.status_code == 502
    detail = failed.json()["detail"]
    assert detail.startswith(f"{CAUSE}: RuntimeError: db refused {MASK} for token {MASK}; the caller sent ")
    assert leaks(failed.text) == [], "exposed, and still masked: config secrets and request credentials"


def test_no_log_line_carries_the_locals_of_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A frame's locals held request headers and the whole blueprint: a 26 KB ERROR line, with config values."""

    # Values built at run time: a traceback's source lines may show the code, never what the locals held.
    local_value, header_value = "local-value-" + "9d8c7b", "local-header-" + "1a2b3c"

    def handle(headers: dict[str, str]) -> None:
        blueprint_text = f"db_password: {local_value}"  # noqa: F841  # a local the traceback must not show
        raise ConnectionResetError("client went away")

    for fmt in ("json", "console"):
        logs.configure("test", fmt=fmt)
        try:
            try:
                handle({"authorization": f"Bearer {header_value}"})
            except ConnectionResetError:
                structlog.get_logger("test").exception("request failed")
        finally:
            structlog.reset_defaults()
            structlog.contextvars.clear_contextvars()
        err = capsys.readouterr().err
        assert "client went away" in err and "handle" in err, "the traceback itself is logged"
        assert local_value not in err and header_value not in err, fmt
        if fmt == "json":
            (line,) = [json.loads(text) for text in err.splitlines() if text.startswith("{")]
            frames = [frame for item in line["exception"] for frame in item["frames"]]
            assert frames and not any("locals" in frame for frame in frames)
