"""``/_backworks/metrics``: request counts and latencies per endpoint and status class, stage durations, and
scrape-time figures (breakers, live replicas, stage backlog, dead letters, event publishing), bounded labels."""

from __future__ import annotations

from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from backworks.pipeline.blueprints import LoadedBlueprint
from tests.serving import Gateway, wait_live
from tests.stages import running_stages


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_requests_per_route_and_status_class(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with running_stages(example, nats_client), gateway(example) as (http, state):
        await wait_live(state, replicas={name: 1 for name in example.instances})
        for name in ("a", "b", "c"):
            assert (await http.get(f"/hello/{name}")).status_code == 200
        assert (await http.get("/nowhere")).status_code == 404
        response = await http.get("/_backworks/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("backworks_requests_total", (("route", "hello"), ("status", "2xx")))] == 3
    assert found[("backworks_request_duration_seconds_count", (("route", "hello"),))] == 3
    assert found[("backworks_stage_duration_seconds_count", (("stage", "stamp.request"),))] == 3
    assert found[("backworks_live_replicas", (("instance", "stamp"),))] == 1
    assert found[("backworks_breaker_state", (("instance", "stamp"),))] == 0
    assert found[("backworks_stage_pending", (("stage", "stamp.request"),))] == 0
    assert found[("backworks_dead_letters", ())] == 0
    assert found[("backworks_requests_in_flight", ())] == 0
    assert ("backworks_events_total", (("outcome", "emitted"),)) in found
    labels = {label for (_, pairs) in found for label, _ in pairs}
    assert labels <= {"route", "status", "stage", "instance", "outcome", "reason", "cause", "le"}, labels
