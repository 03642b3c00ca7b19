from __future__ import annotations

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Continue
from backworks.plugins.request_headers import RequestHeaders
from backworks.plugins.request_headers.config import RequestHeadersConfig


async def test_sets_and_removes_request_headers() -> None:
    envelope = Envelope(route="r", method="GET", path="/", headers=[("cookie", "a"), ("x-stamped", "old")])
    config = RequestHeadersConfig(set={"X-Stamped": "yes"}, remove=["Cookie"])
    action = await RequestHeaders(config, instance="stamp").process_request(envelope)
    assert isinstance(action, Continue)
    assert action.envelope.headers == [("x-stamped", "yes")]
