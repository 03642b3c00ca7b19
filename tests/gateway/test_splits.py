"""Choosing a split's branch per request: weights, stickiness, a rollback's hold; and a split served end to end."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from nats.aio.client import Client

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import REQUEST_RESPONDED_SUBJECT
from backworks.contracts.splits import Split
from backworks.gateway.splits import EndpointSplits, branch_at, sticky_point
from backworks.pipeline import blueprints, broker, credentials
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

DRAWS = 20_000


def split_of(weights: dict[str, int], sticky: str | None = None) -> Split:
    return Split.model_validate({"split": weights, "sticky": sticky})


def envelope(headers: list[tuple[str, str]] | None = None, client: str | None = "10.0.0.1") -> Envelope:
    return Envelope(route="e", method="GET", path="/x", headers=headers or [], client=client)


def chooser(split: Split, seed: int = 7) -> EndpointSplits:
    return EndpointSplits("e", {"tag": split}, {}, draw=random.Random(seed).random)


def test_weighted_choice_follows_the_weights_and_never_picks_a_zero_weight() -> None:
    split = split_of({"v1": 90, "v2": 10, "off": 0})
    splits = chooser(split)
    counts = Counter(splits.choose(envelope())["tag"] for _ in range(DRAWS))
    assert counts["off"] == 0
    # Binomial, p = 0.1, n = 20,000: sigma = 42 requests (0.21 points); 1 point is ~5 sigma.
    assert abs(counts["v2"] / DRAWS - 0.10) < 0.01, counts
    assert [branch_at(split, point) for point in (0.0, 0.8999, 0.9, 0.9999)] == ["v1", "v1", "v2", "v2"]
    assert branch_at(split_of({"a": 0, "b": 3}), 0.0) == "b"


def test_sticky_by_header_sends_one_value_to_one_branch_and_spreads_values_by_weight() -> None:
    splits = chooser(split_of({"v1": 50, "v2": 50}, "header:x-user"))
    seen: dict[str, set[str]] = {}
    for round_ in range(5):
        for user in range(400):
            picked = splits.choose(envelope([("x-user", f"user-{user}")]))["tag"]
            seen.setdefault(f"user-{user}", set()).add(picked)
        assert round_ > 0 or len(seen) == 400
    assert all(len(branches) == 1 for branches in seen.values()), "a user changed branch"
    shares = Counter(next(iter(branches)) for branches in seen.values())
    assert 140 < shares["v2"] < 260, shares  # 400 users at 50 %: sigma = 10
    # The point is a fixed function of endpoint, split and key: the same on every gateway and after a restart.
    assert sticky_point("e", "tag", "user-1") == sticky_point("e", "tag", "user-1") != sticky_point("e", "x", "user-1")
    # Without the header, the request is not sticky: weighted random.
    unsticky = Counter(splits.choose(envelope())["tag"] for _ in range(1000))
    assert unsticky["v1"] > 0 and unsticky["v2"] > 0


def test_sticky_by_consumer_keys_on_the_credentials_else_the_client_address() -> None:
    credentials.declare(headers=["x-api-key"])
    splits = chooser(split_of({"v1": 50, "v2": 50}, "consumer"))
    for key in ("alpha-key-0001", "bravo-key-0002", "charlie-key-0003", "delta-key-0004"):
        picked = {splits.choose(envelope([("x-api-key", key)], client=f"10.0.0.{n}"))["tag"] for n in range(30)}
        assert len(picked) == 1, f"the caller with {key} changed branch with its address"
    by_address = {splits.choose(envelope(client="192.0.2.7"))["tag"] for _ in range(30)}
    assert len(by_address) == 1
    spread = Counter(splits.choose(envelope([("x-api-key", f"key-number-{n:05}")]))["tag"] for n in range(400))
    assert spread["v1"] > 100 and spread["v2"] > 100, spread


def test_a_held_split_sends_everything_to_what_the_hold_names() -> None:
    splits = chooser(split_of({"v1": 1, "v2": 99}))
    picks = Counter(splits.choose(envelope(), lambda endpoint, name, split: split.baseline)["tag"] for _ in range(500))
    assert picks == {"v1": 500}


SERVED = """name: api
plugins:
  tag-v1: {type: response-headers, config: {set: {x-branch: v1}}}
  tag-v2: {type: response-headers, config: {set: {x-branch: v2}}}
endpoints:
  e:
    path: /x
    plugins:
      - tag: {split: {tag-v1: 50, tag-v2: 50}}
    handler: {type: mock, config: {body: {ok: true}}}
"""


async def test_the_gateway_routes_each_request_to_its_branch_and_the_events_name_it(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded: LoadedBlueprint = blueprints.load(write_blueprint(tmp_path, SERVED))
    js = broker.jetstream(nats_client)
    responded: list[dict[str, object]] = []

    async def collect(msg: object) -> None:
        responded.append(json.loads(msg.data))  # type: ignore[attr-defined]  # a nats Msg

    await nats_client.subscribe(REQUEST_RESPONDED_SUBJECT, cb=collect)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, state):
        assert js is not None and state.rollbacks is not None, "a blueprint with splits watches bw_splits"
        served: Counter[str] = Counter()
        for _ in range(60):
            response = await http.get("/x")
            assert response.status_code == 200
            branch = response.headers["x-branch"]
            timing = response.headers["server-timing"]
            assert f"tag-{branch}.response" in timing and f"tag-{'v2' if branch == 'v1' else 'v1'}" not in timing
            served[branch] += 1
        assert served["v1"] > 5 and served["v2"] > 5, served
        await eventually(lambda: len(responded) == 60)
    by_event = Counter(str(event["branches"]) for event in responded)
    assert by_event == {str({"tag": "tag-v1"}): served["v1"], str({"tag": "tag-v2"}): served["v2"]}
