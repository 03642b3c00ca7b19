"""The fleet probe: a probe nobody subscribes to is an empty answer, not a warning."""

from __future__ import annotations

from nats.aio.client import Client
from structlog.testing import capture_logs

from backworks.pipeline.fleetprobe import ask


async def test_a_probe_nobody_subscribes_to_has_no_answers_and_no_warning(nats_client: Client) -> None:
    with capture_logs() as logs:
        answers = await ask(nats_client, window=0.5)
    assert answers == []
    assert not [entry for entry in logs if entry["log_level"] == "warning"], logs
