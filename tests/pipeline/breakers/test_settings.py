"""Breaker settings: resilience4j's keys with defaults, and the consecutive-failure keys of earlier releases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backworks.contracts.blueprint import BreakerSettings, PluginInstance, SlidingWindow, WindowType


def test_the_defaults() -> None:
    settings = BreakerSettings()
    assert settings.sliding_window == SlidingWindow(type=WindowType.COUNT, size=20)
    assert (settings.minimum_calls, settings.failure_rate, settings.slow_call_rate) == (10, 50, 100)
    assert (settings.slow_call_duration_ms, settings.wait_in_open_ms, settings.permitted_calls_in_half_open) == (
        60_000,
        30_000,
        3,
    )


def test_consecutive_failure_keys_still_work_as_a_full_count_window() -> None:
    old = PluginInstance.model_validate(
        {"type": "fault", "breaker": {"failure_threshold": 3, "reset_timeout_ms": 6000, "half_open_probes": 2}}
    ).breaker
    assert old == BreakerSettings(
        sliding_window=SlidingWindow(type=WindowType.COUNT, size=3),
        minimum_calls=3,
        failure_rate=100,
        wait_in_open_ms=6000,
        permitted_calls_in_half_open=2,
    )
    assert BreakerSettings.model_validate({"reset_timeout_ms": 100}).minimum_calls == 5  # the old default threshold


def test_mixing_old_and_new_keys_says_what_to_write() -> None:
    with pytest.raises(ValidationError, match=r"failure_threshold: N -> sliding_window: \{type: count, size: N\}"):
        BreakerSettings.model_validate({"failure_threshold": 3, "failure_rate": 50})


def test_a_minimum_beyond_the_count_window_could_never_open_it() -> None:
    with pytest.raises(ValidationError, match=r"minimum_calls \(30\) exceeds its count window \(20 calls\)"):
        BreakerSettings.model_validate({"minimum_calls": 30})
    time_window = {"sliding_window": {"type": "time", "size": 5}, "minimum_calls": 30}
    assert BreakerSettings.model_validate(time_window).minimum_calls == 30


def test_unknown_keys_and_rates_out_of_range_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        BreakerSettings.model_validate({"failure_rate_threshold": 50})
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        BreakerSettings.model_validate({"failure_rate": 150})
