"""The profiler counts calls and outcomes per hook, measures latency percentiles and allocations."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.console import Console

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.plugin import Action, Continue, Fail, Respond, Security
from backworks.pipeline.secrets import MASK
from backworks.sdk import generated_workload, profile
from backworks.sdk.profiler import HookStats, cut_points, percentile
from tests.samples import KeyConfig


class Busy(Security[KeyConfig]):
    name = "busy"
    version = "1.0.0"
    description = "Slow to authenticate, allocates to authorize, sometimes fails, always audits."
    Config = KeyConfig
    kept: ClassVar[list[bytes]] = []

    async def authenticate(self, envelope: Envelope) -> Action:
        await asyncio.sleep(0.002)
        if envelope.method == "DELETE":
            return Respond(HttpResponse(status=401))
        return Continue(envelope)

    async def authorize(self, envelope: Envelope) -> Action:
        self.kept.append(bytes(64 * 1024))
        if envelope.method == "PUT":
            raise RuntimeError("boom")
        return Fail("no") if envelope.method == "POST" else Continue(envelope)

    async def audit_log(self, envelope: Envelope) -> Action:
        return Continue(envelope)


async def test_profile_reports_each_hook_of_every_phase() -> None:
    Busy.kept.clear()
    result = await profile(Busy, {"key": "top-secret-key"}, requests=60, allocation_samples=20)
    hooks = result.hooks
    assert list(hooks) == ["authenticate", "authorize", "audit_log"]
    assert hooks["authenticate"].calls == 60 and hooks["audit_log"].calls == 60
    assert sum(hooks["authenticate"].outcomes.values()) == 60
    assert hooks["authorize"].calls == hooks["authenticate"].outcomes["continue"], "runs only after authenticate"
    assert set(hooks["authorize"].outcomes) <= {"continue", "fail", "raise"} and hooks["authorize"].outcomes["raise"]
    assert hooks["authenticate"].percentile(50) >= 2.0, "the 2 ms sleep shows in the timings"
    assert hooks["authorize"].allocated and min(hooks["authorize"].allocated) >= 64 * 1024
    assert result.growth_bytes >= 64 * 1024 * 10, "what the hook keeps shows as growth"
    assert result.config == {"key": MASK}

    console = Console(width=200, record=True)
    console.print(result.table())
    text = console.export_text()
    assert "profile of busy 1.0.0: 60 requests (allocations over 20)" in text
    assert "authorize" in text and "p99 ms" in text and "alloc/call" in text and "KiB" in text
    as_data: dict[str, Any] = result.as_dict()
    assert [row["hook"] for row in as_data["hooks"]] == ["authenticate", "authorize", "audit_log"]
    Busy.kept.clear()


def test_percentiles_and_the_generated_workload() -> None:
    stats = HookStats("h", durations_ns=[i * 1_000_000 for i in range(1, 101)])
    assert (stats.percentile(50), stats.percentile(90), stats.percentile(99)) == (50.5, 90.1, 99.01)
    assert HookStats("none").percentile(50) == 0.0
    assert HookStats("one", durations_ns=[3_000_000]).percentile(99) == 3.0
    first, again = generated_workload(seed=3), generated_workload(seed=3)
    requests = [first(i) for i in range(50)]
    assert [r.method for r in requests] == [again(i).method for i in range(50)], "reproducible"
    assert {r.method for r in requests} >= {"GET", "POST"}
    assert any(r.body for r in requests) and all(r.path.startswith("/items/") for r in requests)


def test_cut_points_are_the_stdlib_quantiles_with_both_ends() -> None:
    assert cut_points([4, 1, 3, 2], 3) == [1.0, 2.0, 3.0, 4.0]
    assert cut_points([], 2) == [0.0, 0.0, 0.0]
    assert percentile([10, 20], 0.999) == 19.99
