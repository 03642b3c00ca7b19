"""Process lifecycle of a service: a collector freed of the objects left by startup."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Move the ~50k objects left by imports and startup out of the garbage collector's way.

    Without this the cyclic collector rescans them on every generation-2 pass; the benchmark measured
    ~113 -> ~100 µs of CPU per message in a stage host.
    """
    gc.collect()
    gc.freeze()
