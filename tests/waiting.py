"""Waiting for a condition that other tasks or processes make true."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], object | Awaitable[object]], timeout: float = 5.0, interval: float = 0.05
) -> None:
    """Wait until ``predicate()`` is true (sync or async), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
