"""An awaitable map: a future per key (a correlation id, a publish token), resolved when its answer arrives.

The gateway's reply inbox, the acknowledged publisher and the SDK's stage runner all wait this way. Each
entry carries its own expiry (one ``call_later``, no task); an answer for a key nobody waits for any more
(late, or a duplicate) finds nothing and is reported as not delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def timed_out(timeout: float) -> BaseException:
    return TimeoutError(f"no answer within {timeout * 1000:.0f} ms")


class AwaitableMap(Generic[K, V]):
    """Futures by key. ``expect`` then await; ``resolve`` from the subscription callback; ``forget`` when done."""

    def __init__(self, expired: Callable[[float], BaseException] = timed_out) -> None:
        self._expired = expired
        self._waiting: dict[K, tuple[asyncio.Future[V], asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: object) -> bool:
        return key in self._waiting

    def expect(self, key: K, timeout: float) -> asyncio.Future[V]:
        """A future for ``key``'s answer; it fails with ``expired(timeout)`` if none comes within ``timeout`` s."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        timer = loop.call_later(timeout if timeout > 0 else 0.0, self._expire, key, timeout)
        self._waiting[key] = (future, timer)
        return future

    def resolve(self, key: K, value: V) -> bool:
        """Give ``key``'s waiter its answer; False when nobody waits for it (late or duplicate)."""
        future = self._take(key)
        if future is None:
            return False
        future.set_result(value)
        return True

    def fail(self, key: K, error: BaseException) -> bool:
        """Fail ``key``'s waiter with ``error``; False when nobody waits for it."""
        future = self._take(key)
        if future is None:
            return False
        future.set_exception(error)
        return True

    def _take(self, key: K) -> asyncio.Future[V] | None:
        """Remove ``key``'s entry and stop its timer; its future if someone still waits on it."""
        entry = self._waiting.pop(key, None)
        if entry is None:
            return None
        future, timer = entry
        timer.cancel()
        return None if future.done() else future

    def forget(self, key: K) -> None:
        """Stop waiting for ``key`` (the waiter is done, however it ended)."""
        entry = self._waiting.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    def cancel_all(self) -> None:
        """Cancel every waiter (the subscription feeding the map is gone)."""
        waiting, self._waiting = self._waiting, {}
        for future, timer in waiting.values():
            timer.cancel()
            future.cancel()

    def _expire(self, key: K, timeout: float) -> None:
        self.fail(key, self._expired(timeout))
