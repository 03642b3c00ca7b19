"""The liveness view stops, whatever its broker calls do with a cancellation."""

from __future__ import annotations

import asyncio

from backworks.pipeline.liveness import LivenessView


async def test_liveness_stop_ends_the_watch_even_if_a_broker_call_swallows_the_cancellation() -> None:
    swallowed = 0
    forever = asyncio.Event()

    class Watcher:
        def __aiter__(self) -> Watcher:
            return self

        async def __anext__(self) -> None:
            await forever.wait()

    class Bucket:
        async def watchall(self) -> Watcher:
            return Watcher()

    class SwallowingJetStream:
        async def key_value(self, bucket: str) -> Bucket:
            nonlocal swallowed
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                swallowed += 1  # what nats-py's request (3.11's wait_for) does when the reply lands as it is cancelled
            return Bucket()

    view = LivenessView(SwallowingJetStream())  # type: ignore[arg-type]  # only key_value is used
    await view.start()
    await asyncio.sleep(0.05)  # inside key_value
    await asyncio.wait_for(view.stop(), 15.0)
    assert swallowed == 1
