"""The proxy's rules without any network: balancing, ejection, the retry budget, header and path rewriting."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from backworks.contracts.envelope import Envelope
from backworks.pipeline.configs import ConfigContext
from backworks.plugins.proxy import response_limit
from backworks.plugins.proxy.budget import RetryBudget
from backworks.plugins.proxy.config import (
    EMBEDDED_MAX_PAYLOAD,
    Balance,
    PassiveHealth,
    ProxyConfig,
    TargetConfig,
)
from backworks.plugins.proxy.config import RetryBudget as RetryBudgetConfig
from backworks.plugins.proxy.forwarding import request_headers, response_headers, upstream_path, without_hop_by_hop
from backworks.plugins.proxy.upstreams import Upstreams


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def targets(*weights: int) -> list[TargetConfig]:
    return [TargetConfig(url=f"http://10.0.0.{i}:80", weight=w) for i, w in enumerate(weights, start=1)]


def picks(upstreams: Upstreams, count: int) -> Counter[str]:
    chosen = Counter[str]()
    for _ in range(count):
        upstream = upstreams.choose()
        assert upstream is not None
        chosen[upstream.url] += 1
    return chosen


def test_round_robin_ignores_weights_and_weighted_follows_them() -> None:
    assert set(picks(Upstreams(targets(1, 3), Balance.ROUND_ROBIN, None, "p"), 100).values()) == {50}
    weighted = picks(Upstreams(targets(1, 3), Balance.WEIGHTED, None, "p"), 100)
    assert weighted == {"http://10.0.0.1:80": 25, "http://10.0.0.2:80": 75}


def test_least_pending_prefers_the_idle_target() -> None:
    upstreams = Upstreams(targets(1, 1), Balance.LEAST_PENDING, None, "p")
    upstreams.all[0].pending = 5
    assert picks(upstreams, 10) == {"http://10.0.0.2:80": 10}


def test_consecutive_failures_eject_for_longer_each_time_but_never_every_target() -> None:
    clock = Clock()
    passive = PassiveHealth(consecutive_failures=3, base_eject_s=10, max_eject_percent=50)
    upstreams = Upstreams(targets(1, 1), Balance.ROUND_ROBIN, passive, "p", clock=clock)
    first, second = upstreams.all
    for _ in range(2):
        upstreams.failed(first)
    upstreams.succeeded(first)  # a success in between resets the count
    for _ in range(2):
        upstreams.failed(first)
    assert not first.ejected(clock.now)
    upstreams.failed(first)
    assert first.ejected(clock.now) and first.ejected_until == clock.now + 10
    assert picks(upstreams, 4) == {second.url: 4}
    for _ in range(3):
        upstreams.failed(second)
    assert not second.ejected(clock.now), "50 % of two targets: one ejected at most, never both"
    clock.now += 10
    assert not first.ejected(clock.now), "back after its ejection time"
    for _ in range(3):
        upstreams.failed(first)
    assert first.ejected_until == clock.now + 20, "the second ejection lasts twice as long"


def test_a_single_target_is_never_ejected() -> None:
    clock = Clock()
    upstreams = Upstreams(targets(1), Balance.ROUND_ROBIN, PassiveHealth(consecutive_failures=1), "p", clock=clock)
    for _ in range(5):
        upstreams.failed(upstreams.all[0])
    assert upstreams.choose() is upstreams.all[0]


def test_active_health_can_take_every_target_out_and_bring_it_back() -> None:
    upstreams = Upstreams(targets(1), Balance.ROUND_ROBIN, None, "p")
    (only,) = upstreams.all
    for _ in range(2):
        upstreams.checked(only, False, healthy_after=2, unhealthy_after=3)
    assert upstreams.choose() is only
    upstreams.checked(only, False, healthy_after=2, unhealthy_after=3)
    assert upstreams.choose() is None
    assert "failing its health checks" in upstreams.unavailable()
    upstreams.checked(only, True, healthy_after=2, unhealthy_after=3)
    assert upstreams.choose() is None
    upstreams.checked(only, True, healthy_after=2, unhealthy_after=3)
    assert upstreams.choose() is only


def test_the_retry_budget_caps_retries_at_a_share_of_recent_requests() -> None:
    clock = Clock()
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, window_s=10, min_retries=3), clock=clock)
    for _ in range(100):
        budget.request()
    granted = sum(budget.spend() for _ in range(100))
    assert granted == 20
    clock.now += 11  # the window slid past them
    assert [budget.spend() for _ in range(4)] == [True, True, True, False], "min_retries with no traffic"
    assert budget.denied == 81


def test_hop_by_hop_headers_go_and_forwarding_headers_come() -> None:
    envelope = Envelope(
        route="r",
        method="GET",
        path="/api/users/7",
        path_params={"id": "7"},
        query=[("q", "a b"), ("q", "c")],
        headers=[
            ("host", "api.example.com"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("content-length", "0"),
            ("accept", "application/json"),
            ("x-request-id", "from-the-client"),
        ],
        client="2001:db8::1",
        request_id="req-7",
    )
    headers = request_headers(envelope, "http://10.0.0.1:8000", preserve_host=False)
    assert headers == [
        ("host", "10.0.0.1:8000"),
        ("accept", "application/json"),
        ("x-request-id", "req-7"),
        ("x-forwarded-for", "203.0.113.9, 2001:db8::1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "api.example.com"),
        ("forwarded", 'for="[2001:db8::1]";host=api.example.com;proto=http'),
    ]
    kept = request_headers(envelope, "http://10.0.0.1:8000", preserve_host=True)
    assert kept[0] == ("host", "api.example.com")
    assert upstream_path(envelope, "/api", None) == "/users/7?q=a+b&q=c"
    assert upstream_path(envelope, "/apiary", None).startswith("/api/users/7"), "a prefix ends at a segment"
    assert upstream_path(envelope, "", "/v2/people/{path.id}") == "/v2/people/7?q=a+b&q=c"
    answer = response_headers(
        [("Transfer-Encoding", "chunked"), ("Content-Length", "9"), ("Date", "Fri, 04 Dec 2026"), ("X-Up", "1")]
    )
    assert answer == [("x-up", "1")]
    assert without_hop_by_hop([("Connection", "close"), ("Upgrade", "h2c"), ("Proxy-Foo", "1")]) == []


def test_tries_must_fit_in_the_stage_time_limit() -> None:
    context = ConfigContext(instance="p", blueprint_dir=Path("."), timeout_s=3.0)
    data = {"targets": [{"url": "http://127.0.0.1:9"}], "timeout_ms": 1000, "retries": 2}
    with pytest.raises(ValidationError) as raised:
        ProxyConfig.model_validate(data, context=context)
    assert "1000 * 3 tries = 3000 ms does not fit in the stage's time limit of 3000 ms" in str(raised.value)
    assert ProxyConfig.model_validate({**data, "retries": 1}, context=context).retries == 1


def test_target_urls_are_http_bases() -> None:
    with pytest.raises(ValidationError, match="must be http"):
        TargetConfig(url="ftp://x")
    with pytest.raises(ValidationError, match="query"):
        TargetConfig(url="http://x/?a=1")
    assert TargetConfig(url="http://x:1/api/").url == "http://x:1/api"


def test_the_response_limit_leaves_room_for_the_request_in_one_broker_message() -> None:
    from backworks.local.embedded import DEFAULT_MAX_PAYLOAD

    assert EMBEDDED_MAX_PAYLOAD == DEFAULT_MAX_PAYLOAD
    empty, with_body = response_limit(0), response_limit(1024 * 1024)
    assert 4 * empty / 3 < EMBEDDED_MAX_PAYLOAD
    assert 4 * with_body / 3 + 4 * 1024 * 1024 / 3 < EMBEDDED_MAX_PAYLOAD
    assert with_body < empty
