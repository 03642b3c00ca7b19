"""Automatic rollback of a canary split: the judge, and a gateway rolling a failing branch back fleet-wide."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from backworks.contracts.names import SPLITS_BUCKET, alert_subject
from backworks.contracts.splits import RolledBack, SplitRollback
from backworks.gateway.rollback import Outcomes, judge
from backworks.pipeline import blueprints, broker
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

ROLLING = """name: api
# Generous time limits: a replica slowed by a loaded machine is not routed around as stalled (a 504 among the 200s).
plugins:
  good: {type: fault, timeout_ms: 4000, config: {mode: none}}
  bad: {type: fault, timeout_ms: 4000, config: {mode: abort, abort_status: 500}}
endpoints:
  e:
    path: /x
    plugins:
      - canary:
          split: {good: 50, bad: 50}
          rollback: {max_error_rate_increase: 20%, window_s: 30, min_calls: 10}
    handler: {type: mock, timeout_ms: 4000, config: {body: {ok: true}}}
"""
MAX_REQUESTS = 400


def outcomes(failed: int, fine: int, ms: float = 1.0) -> Outcomes:
    found = Outcomes()
    now = time.monotonic()
    for index in range(failed + fine):
        found.samples.append((now, index < failed, ms))
    return found


def test_the_judge_compares_error_rate_and_p99_past_margins_once_both_have_enough_calls() -> None:
    rule = SplitRollback(max_error_rate_increase=5, max_p99_increase_ms=50, min_calls=20)
    assert judge(rule, outcomes(1, 99), outcomes(10, 9)) is None, "the branch has too few calls"
    assert judge(rule, outcomes(1, 99), outcomes(1, 19)) is None, "5 points more than the baseline: within"
    verdict = judge(rule, outcomes(1, 99), outcomes(3, 17))
    assert verdict is not None and "5xx rate 15.0 % vs 1.0 % (margin 5 points)" in verdict[0]
    assert verdict[1]["branch_error_rate"] == 15.0 and verdict[1]["baseline_calls"] == 100
    slow = judge(rule, outcomes(0, 100, ms=10), outcomes(0, 20, ms=61))
    assert slow is not None and "p99 61.0 ms vs 10.0 ms (margin 50 ms)" in slow[0]
    assert judge(rule, outcomes(0, 100, ms=10), outcomes(0, 20, ms=59)) is None


@pytest.mark.usefixtures("allow_fault")
async def test_a_failing_branch_is_rolled_back_for_every_gateway_until_reset(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, ROLLING))
    alerts: list[dict[str, object]] = []

    async def on_alert(msg: Msg) -> None:
        alerts.append(json.loads(msg.data))

    await nats_client.subscribe(alert_subject("firing"), cb=on_alert)
    kv = await broker.jetstream(nats_client).key_value(SPLITS_BUCKET)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, state):
        rollbacks = state.rollbacks
        assert rollbacks is not None
        before: Counter[int] = Counter()
        for _ in range(MAX_REQUESTS):
            before[(await http.get("/x")).status_code] += 1
            if rollbacks.records:
                break
        assert rollbacks.records, f"not rolled back after {MAX_REQUESTS} requests: {before}"
        assert before[500] >= 10 and before[200] >= 10, before

        async def stored() -> bool:
            try:
                return bool((await kv.get("e.canary")).value)
            except KeyNotFoundError:
                return False

        await eventually(stored)
        record = RolledBack.model_validate_json((await kv.get("e.canary")).value or b"")
        assert (record.baseline, record.branch, record.gateway) == ("good", "bad", state.gateway_id)
        assert "branch bad worse than baseline good over 30 s: 5xx rate 100.0 % vs 0.0 %" in record.reason
        await eventually(lambda: len(alerts) == 1)
        assert alerts[0]["rule"] == "split-rollback" and alerts[0]["subject"] == "e/canary"
        assert "5xx rate 100.0 %" in str(alerts[0]["condition"])

        after = [await http.get("/x") for _ in range(50)]
        assert {r.status_code for r in after} == {200}
        assert all("good.request" in r.headers["server-timing"] for r in after)
        # Another gateway replica (or this one restarted) reads the rollback from the bucket before serving.
        async with gateway(loaded) as (other, _):
            assert {(await other.get("/x")).status_code for _ in range(50)} == {200}

        await kv.delete("e.canary")  # what `backworks split reset e canary` does
        await eventually(lambda: not rollbacks.records)
        resumed = Counter([(await http.get("/x")).status_code for _ in range(30)])
        assert resumed[500] > 0, "the canary resumed after the reset"
