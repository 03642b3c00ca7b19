"""Ending background tasks reliably.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation when its inner future completes at the same
moment (CPython gh-86296, fixed in 3.12), and nats-py awaits through ``wait_for`` (requests, KV puts), so a
single ``task.cancel()`` followed by ``await task`` can wait forever: the task carries on to its next
``sleep``. Every background loop is therefore stopped through :func:`cancel`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

CANCEL_RETRY = 1.0
"""Seconds to wait for cancelled tasks before cancelling the ones still running again."""


async def cancel(tasks: Iterable[asyncio.Task[object]] | asyncio.Task[object] | None) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again if a cancellation got lost."""
    if tasks is None:
        return
    pending = {tasks} if isinstance(tasks, asyncio.Task) else set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY)
