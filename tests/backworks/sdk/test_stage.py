"""The same plugins, served by the real stage host on a real nats-server: every category maps onto phases."""

from __future__ import annotations

from typing import Any

import pytest

from backworks.contracts.envelope import Envelope, HttpResponse, Principal
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline.plugin import Action, Alert, Analytics, Continue, EmptyConfig, Monitoring, Respond, Security
from backworks.plugins.request_headers import RequestHeaders
from backworks.sdk import (
    StageRunner,
    assert_continued,
    assert_failed,
    assert_header,
    assert_responded,
    request,
    response,
)
from tests.samples import KeyConfig


class Guard(Security[KeyConfig]):
    name = "guard"
    version = "1.0.0"
    description = "Authenticates by key, authorizes GET only, audits into a header."
    Config = KeyConfig

    async def authenticate(self, envelope: Envelope) -> Action:
        given = envelope.header("x-key")
        if given == "explode":
            raise RuntimeError(f"key store rejected {self.config.key.get_secret_value()}")
        if given != self.config.key.get_secret_value():
            return Respond(HttpResponse(status=401))
        envelope.principal = Principal(consumer="k")
        return Continue(envelope)

    async def authorize(self, envelope: Envelope) -> Action:
        return Continue(envelope) if envelope.method == "GET" else Respond(HttpResponse(status=403))

    async def audit_log(self, envelope: Envelope) -> Action:
        assert envelope.response is not None
        envelope.response.set_header("x-audited", str(envelope.response.status))
        return Continue(envelope)


class Slo(Monitoring[EmptyConfig]):
    name = "slo"
    version = "1.0.0"
    description = "Alerts on errors."

    async def collect_metrics(self, envelope: Envelope) -> Action:
        return Continue(envelope)

    async def generate_alerts(self, envelope: Envelope) -> list[Alert]:
        status = envelope.response.status if envelope.response else 0
        return [Alert("error", f"status {status}")] if status >= 500 else []


class Tally(Analytics[EmptyConfig]):
    name = "tally"
    version = "1.0.0"
    description = "Counts requests."
    seen = 0

    async def track_event(self, envelope: Envelope) -> Action:
        self.seen += 1
        return Continue(envelope)

    async def generate_report(self) -> dict[str, Any]:
        return {"requests": self.seen}


async def test_a_stage_runner_starts_its_own_broker_and_serves_a_built_in() -> None:
    async with StageRunner(RequestHeaders, {"set": {"x-a": "1"}}) as stage:
        envelope = assert_continued(await stage.request(path="/x"))
        assert_header(envelope, "x-a", "1")
        assert [timing.stage for timing in envelope.timings] == ["test.request"]
        (replica,) = await stage.replicas()
        assert (replica.plugin, replica.version, replica.instance) == ("request-headers", "1.0.0", "test")
        server = stage.server
        assert server is not None and server.process is not None
    assert server.process is None, "the broker it started is stopped"


async def test_security_hooks_run_in_both_phases_of_the_real_host(nats_server: EmbeddedNats) -> None:
    async with StageRunner(Guard, {"key": "open-sesame"}, nats_url=nats_server.url) as stage:
        assert_responded(await stage.request(request()), status=401)
        assert_responded(await stage.request(request("POST", headers={"x-key": "open-sesame"})), status=403)
        allowed = assert_continued(await stage.request(request(headers={"x-key": "open-sesame"})))
        assert allowed.principal == Principal(consumer="k")
        audited = assert_continued(await stage.response(response(204)))
        assert audited.response is not None
        assert_header(audited.response, "x-audited", "204")


async def test_a_secret_in_a_failure_never_reaches_the_envelope(nats_server: EmbeddedNats) -> None:
    async with StageRunner(Guard, {"key": "open-sesame"}, nats_url=nats_server.url) as stage:
        failed = await stage.request(request(headers={"x-key": "explode"}))
    reason = assert_failed(failed)
    assert reason == "RuntimeError: key store rejected ********"
    assert "open-sesame" not in failed.model_dump_json()


async def test_monitoring_and_analytics_observe_the_response_phase(nats_server: EmbeddedNats) -> None:
    async with StageRunner(Slo, nats_url=nats_server.url, instance="slo") as stage:
        quiet = assert_continued(await stage.response(response(200)))
        loud = assert_continued(await stage.response(response(502)))
        with pytest.raises(AssertionError, match="does not serve the request phase"):
            await stage.request(request())
    assert "alerts" not in quiet.annotations
    assert loud.annotations["alerts"] == [{"source": "slo", "name": "error", "severity": "warning",
                                           "message": "status 502"}]  # fmt: skip
    async with StageRunner(Tally, nats_url=nats_server.url, instance="tally") as stage:
        for _ in range(2):
            assert_continued(await stage.response(response(200)))
        assert stage.host is not None
        assert await stage.host.plugin.get_metrics() == {"requests": 2.0}
