"""Process lifecycle helpers: children that die with their parent, a collector freed of startup objects."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for children: on Linux the kernel sends SIGTERM to the child if we die, so no orphans."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def freeze_startup_objects() -> None:
    """Move the ~50k objects left by imports and startup out of the garbage collector's way.

    Without this the cyclic collector rescans them on every generation-2 pass; the benchmark measured
    ~113 -> ~100 µs of CPU per message in a stage host.
    """
    gc.collect()
    gc.freeze()
