"""Containing a plugin process: OS resource limits, and a watchdog for a blocked event loop.

Limits come from the blueprint (``plugins.<instance>.limits``). Exceeding memory raises ``MemoryError``
in the hook; running out of file descriptors raises ``OSError(EMFILE)``: either way the stage fails and the
replica exits to be restarted (codes 71, 73), since the next message would fail the same way. ``cpu_seconds``
is a CPU-time budget for the replica's life: at the soft limit the kernel sends SIGXCPU and the replica exits
with ``CPU_EXHAUSTED_EXIT`` to be restarted with a fresh budget (the message it held is redelivered or, if it
stalled its stage, routed around); a process that cannot run Python code any more is killed at soft + 1 s.

A hook that blocks the event loop (a synchronous hang) cannot be timed out from inside the loop, so a
watchdog thread ends the process once the loop has not turned for ``stall_after`` seconds; JetStream then
redelivers the message to another replica and the supervisor restarts this one.

A process that was stopped (SIGSTOP, a frozen container, a suspended VM) did not have a blocked loop: every
thread stood still, the watchdog's too. The watchdog tells the two apart by its own sleep: when it wakes far
later than it asked to, the whole process was stopped, and the loop gets a fresh ``stall_after`` from that
moment. A plugin that blocks the loop without releasing the GIL delays the watchdog the same way; it is caught
once it releases the GIL, or by the CPU-time limit.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import threading
import time

import structlog

from backworks.contracts.blueprint import ResourceLimits

log = structlog.get_logger("backworks.limits")

STALLED_EXIT = 72
CPU_EXHAUSTED_EXIT = 74
WATCHDOG_TICK = 0.1
WATCH_INTERVAL = WATCHDOG_TICK * 5
MIN_STALL = 2.0
OVERSLEEP = 1.0
"""Seconds the watchdog may wake late before it concludes the whole process was stopped, not the loop blocked."""


def apply(limits: ResourceLimits) -> dict[str, int]:
    """Set this process's rlimits; returns what was applied (for the log)."""
    applied: dict[str, int] = {}
    if limits.memory_mb:
        size = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        applied["memory_mb"] = limits.memory_mb
    if limits.cpu_seconds:
        soft = limits.cpu_seconds
        signal.signal(signal.SIGXCPU, _cpu_exhausted)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
        applied["cpu_seconds"] = soft
    if limits.open_files:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        value = limits.open_files if hard == resource.RLIM_INFINITY else min(limits.open_files, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
        applied["open_files"] = value
    return applied


def _cpu_exhausted(signum: int, frame: object) -> None:
    # Runs between two bytecodes of whatever hogs the CPU: no logging machinery, write the line and go.
    sys.stderr.write(
        '{"event": "replica used its CPU-time budget (limits.cpu_seconds); exiting to be restarted", '
        f'"level": "error", "pid": {os.getpid()}}}\n'
    )
    sys.stderr.flush()
    os._exit(CPU_EXHAUSTED_EXIT)


class LoopWatchdog:
    """Ends the process when the event loop stops turning for ``stall_after`` seconds."""

    def __init__(self, stall_after: float) -> None:
        self.stall_after = max(MIN_STALL, stall_after)
        self.last_turn = time.monotonic()
        self._stop = threading.Event()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.last_turn = time.monotonic()
            self._handle = loop.call_later(WATCHDOG_TICK, tick)

        tick()
        threading.Thread(target=self._watch, name="loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _watch(self) -> None:
        resumed_at = last_look = time.monotonic()
        while True:
            if self._stop.wait(WATCH_INTERVAL):
                return
            now = time.monotonic()
            # Measured from the previous look, not from this wait's start: a stop that lands anywhere in the
            # round (also between a look and the next wait, while this thread waits for the GIL) is seen.
            if now - last_look > WATCH_INTERVAL + OVERSLEEP:
                resumed_at = now  # the process was stopped and resumed: the loop was not blocked meanwhile
            last_look = now
            stalled = now - max(self.last_turn, resumed_at)
            if stalled > self.stall_after:
                # The loop is blocked by a plugin; logging through it is impossible, write directly.
                sys.stderr.write(
                    f'{{"event": "event loop blocked for {stalled:.1f} s by a plugin; exiting to be restarted", '
                    f'"level": "error", "pid": {os.getpid()}}}\n'
                )
                sys.stderr.flush()
                os._exit(STALLED_EXIT)
