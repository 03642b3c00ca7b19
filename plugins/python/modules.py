"""A handler module's own ``startup()`` and ``shutdown()``, run once per process however many handler instances
(endpoints, co-located stages) use the module: the first instance to start runs ``startup``, the last to stop
runs ``shutdown``.
"""

from __future__ import annotations

import inspect
from types import ModuleType

__all__ = ["acquire", "release"]

_users: dict[str, int] = {}
"""Per module name, how many handler instances of this process use it."""


async def _call_hook(module: ModuleType, name: str) -> None:
    hook = getattr(module, name, None)
    if hook is None or not callable(hook):
        return
    result = hook()
    if inspect.isawaitable(result):
        await result


async def acquire(module: ModuleType) -> None:
    """One more user of ``module``; the first runs its ``startup()`` (an exception propagates: the stage fails)."""
    # Counted before awaiting, so a second instance starting meanwhile does not run startup() again.
    users = _users[module.__name__] = _users.get(module.__name__, 0) + 1
    if users == 1:
        try:
            await _call_hook(module, "startup")
        except BaseException:
            _users.pop(module.__name__, None)
            raise


async def release(module: ModuleType) -> None:
    """One user fewer; the last runs the module's ``shutdown()``."""
    left = _users.get(module.__name__, 0) - 1
    if left > 0:
        _users[module.__name__] = left
        return
    _users.pop(module.__name__, None)
    await _call_hook(module, "shutdown")
