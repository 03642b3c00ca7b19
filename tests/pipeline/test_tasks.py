"""``cancel`` ends background tasks even when a cancellation is swallowed (as 3.11's ``wait_for`` can)."""

from __future__ import annotations

import asyncio

import pytest

from backworks.pipeline import tasks
from backworks.pipeline.tasks import cancel


async def test_a_swallowed_cancellation_is_repeated_until_the_task_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "CANCEL_RETRY", 0.05)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed += 1  # lost, as in CPython gh-86296: the loop carries on to its next sleep
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel(task), timeout=5)
    assert swallowed == 1 and task.cancelled()


async def test_cancel_takes_one_task_many_or_none() -> None:
    many = [asyncio.create_task(asyncio.sleep(30)) for _ in range(3)]
    await cancel(many)
    assert all(task.cancelled() for task in many)
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    await cancel(finished)
    assert finished.done() and not finished.cancelled()
    await cancel(None)
