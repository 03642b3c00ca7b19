"""What a replica remembers so that a copy of a message JetStream delivers again does not run the hook twice.

JetStream delivers at least once: a message whose ack was lost (the broker died, its consumer's leader changed), or
whose ack deadline passed while the broker was away, comes again. The stage host then, per replica:

- acknowledges a copy of a message it already handed on (``HandedOff``) without running it;
- puts back a copy of a message it is still working on (the first delivery settles it);
- hands on the result it kept (``Recent``) for a message whose hook ran but whose hand-off failed, without
  running the hook again.

What this cannot cover: a copy delivered to *another* replica (or to this one after it restarted) runs the hook
again. Exactly-once execution across replicas would need a fleet-wide record per request written before each
hook runs; the pipeline promises at-least-once, and de-duplicates every hand-off (``Nats-Msg-Id``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Key = tuple[str, int]
"""(envelope id, cursor): one hand-off of one request to one stage."""

T = TypeVar("T")


class Recent(Generic[T]):
    """The last ``size`` values put here by key, the oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Key, T] = OrderedDict()

    def add(self, key: Key, value: T) -> None:
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def pop(self, key: Key, default: T | None = None) -> T | None:
        return self._items.pop(key, default)


class HandedOff:
    """The last ``size`` (envelope id, cursor) pairs this replica handed on: one insert per message.

    An ``OrderedDict``, not a dict: forgetting a plain dict's oldest key (``del d[next(iter(d))]``) walks over
    every slot deleted before it until the dict is resized, ~10 µs per message once full (0.8 µs here).
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._keys: OrderedDict[Key, None] = OrderedDict()

    def add(self, key: Key) -> None:
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)  # the oldest goes

    def __contains__(self, key: object) -> bool:
        return key in self._keys
