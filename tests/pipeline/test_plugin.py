"""The plugin contract: categories, the phases they serve, how the executor dispatches to hooks, secrets."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from backworks.contracts.envelope import Envelope, HttpResponse, Principal, Stage
from backworks.contracts.names import Phase
from backworks.contracts.types import FailureKind
from backworks.pipeline import secrets
from backworks.pipeline.executor import dispatch, execute
from backworks.pipeline.plugin import (
    Action,
    Alert,
    AlertSeverity,
    Analytics,
    Continue,
    EmptyConfig,
    Fail,
    Handler,
    Monitoring,
    RequestProcessor,
    Respond,
    ResponseEnhancer,
    Security,
)
from tests.samples import KeyConfig


def envelope(**changes: Any) -> Envelope:
    return Envelope(route="r", method="GET", path="/", **changes)


class Authn(Security[EmptyConfig]):
    name = "authn"
    version = "1.0.0"
    description = "Authenticates from x-user."

    async def authenticate(self, envelope: Envelope) -> Action:
        user = envelope.header("x-user")
        if user is None:
            return Respond(HttpResponse(status=401))
        envelope.principal = Principal(consumer=user)
        return Continue(envelope)


class Full(Authn):
    name = "full"
    description = "Authenticates, authorizes admins only, and audits."
    audited: list[int] = []  # noqa: RUF012  # shared on purpose: the test reads what the hook saw

    async def authorize(self, envelope: Envelope) -> Action:
        assert envelope.principal is not None, "authorize runs after authenticate"
        if envelope.principal.consumer != "admin":
            return Respond(HttpResponse(status=403))
        return Continue(envelope)

    async def audit_log(self, envelope: Envelope) -> Action:
        assert envelope.response is not None
        self.audited.append(envelope.response.status)
        return Continue(envelope)


class Watch(Monitoring[EmptyConfig]):
    name = "watch"
    version = "1.0.0"
    description = "Alerts on 5xx."
    seen = 0

    async def collect_metrics(self, envelope: Envelope) -> Action:
        self.seen += 1
        return Continue(envelope)

    async def generate_alerts(self, envelope: Envelope) -> list[Alert]:
        if envelope.response is not None and envelope.response.status >= 500:
            return [Alert("5xx", f"status {envelope.response.status}", AlertSeverity.CRITICAL, {"route": "r"})]
        return []


class Count(Analytics[EmptyConfig]):
    name = "count"
    version = "1.0.0"
    description = "Counts."
    total = 0

    async def track_event(self, envelope: Envelope) -> Action:
        self.total += 1
        return Continue(envelope)

    async def generate_report(self) -> dict[str, Any]:
        return {"total": self.total, "by": {"get": self.total, "ok": True}, "label": "x"}


def test_phases_follow_the_hooks_a_class_implements() -> None:
    class Audit(Security[EmptyConfig]):
        name = "audit"

        async def audit_log(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    assert Authn.phases == (Phase.REQUEST,)
    assert Audit.phases == (Phase.RESPONSE,)
    assert Full.phases == (Phase.REQUEST, Phase.RESPONSE)
    assert Watch.phases == Count.phases == (Phase.RESPONSE,)
    assert Security.phases == ()
    assert Authn.is_critical and Handler.is_critical, "security and handlers fail closed"
    assert not RequestProcessor.is_critical and not Monitoring.is_critical and not Analytics.is_critical
    assert ResponseEnhancer.category.value == "response-enhancer"


async def test_a_request_processor_may_also_see_the_response() -> None:
    class Stamp(RequestProcessor[EmptyConfig]):
        name = "stamp"

        async def process_request(self, envelope: Envelope) -> Action:
            envelope.annotations["seen"] = True
            return Continue(envelope)

    class Limit(Stamp):
        name = "limit"

        async def process_response(self, envelope: Envelope) -> Action:
            assert envelope.response is not None and envelope.annotations["seen"]
            envelope.response.set_header("ratelimit-limit", "5")
            return Continue(envelope)

    assert Stamp.phases == (Phase.REQUEST,), "process_response is optional"
    assert Limit.phases == (Phase.REQUEST, Phase.RESPONSE)
    assert Limit.phase_hooks[Phase.RESPONSE] == ("process_response",)
    plugin = Limit(EmptyConfig(), instance="limit")
    seen = await dispatch(plugin, Phase.REQUEST, envelope())
    assert isinstance(seen, Continue)
    seen.envelope.response = HttpResponse(status=200)
    answered = await dispatch(plugin, Phase.RESPONSE, seen.envelope)
    assert isinstance(answered, Continue) and answered.envelope.response is not None
    assert answered.envelope.response.header("ratelimit-limit") == "5"


async def test_security_runs_authenticate_then_authorize_and_stops_at_the_first_answer() -> None:
    plugin = Full(EmptyConfig(), instance="sec")
    assert isinstance(await dispatch(plugin, Phase.REQUEST, envelope()), Respond)
    denied = await dispatch(plugin, Phase.REQUEST, envelope(headers=[("x-user", "bob")]))
    assert isinstance(denied, Respond) and denied.response.status == 403
    allowed = await dispatch(plugin, Phase.REQUEST, envelope(headers=[("x-user", "admin")]))
    assert isinstance(allowed, Continue) and allowed.envelope.principal == Principal(consumer="admin")
    Full.audited.clear()
    audited = await dispatch(plugin, Phase.RESPONSE, envelope(response=HttpResponse(status=204)))
    assert isinstance(audited, Continue) and Full.audited == [204]


async def test_monitoring_alerts_are_logged_attached_and_counted() -> None:
    plugin = Watch(EmptyConfig(), instance="mon")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        ok = await dispatch(plugin, Phase.RESPONSE, envelope(response=HttpResponse(status=200)))
        with structlog.contextvars.bound_contextvars(request_id="q1"):  # what the stage host binds per message
            bad = await dispatch(plugin, Phase.RESPONSE, envelope(response=HttpResponse(status=503), request_id="q1"))
    assert isinstance(ok, Continue) and "alerts" not in ok.envelope.annotations
    assert isinstance(bad, Continue)
    assert bad.envelope.annotations["alerts"] == [
        {"source": "mon", "name": "5xx", "severity": "critical", "message": "status 503"}
    ]
    (alert,) = [entry for entry in logs if entry["event"] == "alert"]
    assert alert["log_level"] == "warning" and alert["request_id"] == "q1" and alert["labels"] == {"route": "r"}
    assert plugin.seen == 2
    assert await plugin.get_metrics() == {"alerts_raised": 1.0}


async def test_generate_alerts_must_return_alerts() -> None:
    class Sloppy(Watch):
        async def generate_alerts(self, envelope: Envelope) -> list[Alert]:
            return ["not an alert"]  # type: ignore[list-item]  # the mistake under test

    with pytest.raises(TypeError, match="list of Alert"):
        await dispatch(Sloppy(EmptyConfig(), instance="m"), Phase.RESPONSE, envelope())


async def test_analytics_publishes_the_numbers_of_its_report() -> None:
    plugin = Count(EmptyConfig(), instance="a")
    for _ in range(3):
        await dispatch(plugin, Phase.RESPONSE, envelope())
    assert await plugin.get_metrics() == {"total": 3.0, "by.get": 3.0}


class Leaky(RequestProcessor[KeyConfig]):
    name = "leaky"
    version = "1.0.0"
    description = "Leaks its token in failures."
    mode = "fail"

    async def process_request(self, envelope: Envelope) -> Action:
        secret = self.config.key.get_secret_value()
        if self.mode == "fail":
            return Fail(f"upstream refused token {secret}")
        if self.mode == "timeout":
            raise TimeoutError(f"timed out with {secret}")
        if self.mode == "plain":
            raise ValueError("nothing secret here")
        raise ValueError(f"bad token {secret}")


async def test_hook_exceptions_reach_the_caller_of_dispatch_unchanged() -> None:
    plugin = Leaky(KeyConfig(key=SecretStr("hunter2-secret")), instance="l")
    Leaky.mode = "plain"
    with pytest.raises(ValueError, match="nothing secret here"):
        await dispatch(plugin, Phase.REQUEST, envelope())


async def test_secrets_never_leave_a_hook_in_a_failure() -> None:
    # Masked once, at the isolation boundary (``execute``), whatever way the secret left the hook.
    plugin = Leaky(KeyConfig(key=SecretStr("hunter2-secret")), instance="l")
    expected = {
        "fail": f"upstream refused token {secrets.MASK}",
        "raise": f"ValueError: bad token {secrets.MASK}",
        "plain": "ValueError: nothing secret here",
    }
    for mode, message in expected.items():
        Leaky.mode = mode
        received = envelope()
        received.itinerary = [Stage(instance="l", phase=Phase.REQUEST)]
        outcome = await execute(plugin, Phase.REQUEST, received.to_json(), received, 1.0, "r", 1)
        assert outcome.failure is FailureKind.ERROR
        assert outcome.message == message
        (error,) = outcome.envelope.errors
        assert error.message == message and "hunter2" not in outcome.envelope.model_dump_json()
