from __future__ import annotations

import asyncio

import pytest

from backworks.pipeline.awaiting import AwaitableMap


async def test_an_answer_reaches_its_waiter_once() -> None:
    waiting: AwaitableMap[str, bytes] = AwaitableMap()
    future = waiting.expect("c1", 5.0)
    assert "c1" in waiting
    assert waiting.resolve("c1", b"first") is True
    assert waiting.resolve("c1", b"duplicate") is False
    assert waiting.resolve("nobody", b"late") is False
    assert await future == b"first"
    assert len(waiting) == 0


async def test_a_waiter_fails_with_the_maps_expiry_error_when_nothing_comes() -> None:
    class Late(Exception):
        pass

    waiting: AwaitableMap[str, bytes] = AwaitableMap(lambda timeout: Late(f"{timeout}"))
    future = waiting.expect("c1", 0.05)
    with pytest.raises(Late, match=r"0\.05"):
        await asyncio.wait_for(future, 2.0)
    assert len(waiting) == 0, "an expired waiter is removed"
    assert waiting.resolve("c1", b"too late") is False


async def test_the_default_expiry_is_a_timeout_error() -> None:
    waiting: AwaitableMap[str, bytes] = AwaitableMap()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting.expect("c1", 0.01), 2.0)


async def test_forget_stops_the_expiry_and_fail_and_cancel_all_end_waiters() -> None:
    waiting: AwaitableMap[str, int] = AwaitableMap()
    forgotten = waiting.expect("a", 0.05)
    waiting.forget("a")
    await asyncio.sleep(0.1)
    assert not forgotten.done(), "a forgotten waiter's timer was cancelled"
    failed = waiting.expect("b", 5.0)
    assert waiting.fail("b", ValueError("no stream")) is True
    with pytest.raises(ValueError, match="no stream"):
        await failed
    pending = [waiting.expect(key, 5.0) for key in ("c", "d")]
    waiting.cancel_all()
    assert all(future.cancelled() for future in pending) and len(waiting) == 0
