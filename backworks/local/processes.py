"""Child processes: started so they die with their parent, stopped by pid with one escalation (SIGTERM, SIGKILL).

Every place that stops a process it started (the supervisor, the embedded broker, the benchmark, the end-to-end
tests) calls ``terminate``, so the grace period, the escalation and the reaping are written once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1
DEFAULT_GRACE = 5.0


def die_with_parent() -> None:
    """``preexec_fn`` for children: on Linux the kernel sends SIGTERM to the child if we die, so no orphans."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cli_command() -> list[str]:
    """How to run the ``backworks`` CLI from here: the console script next to this Python, if installed."""
    script = Path(sys.executable).parent / "backworks"
    if script.exists():
        return [str(script)]
    found = shutil.which("backworks")
    return [found] if found else [sys.executable, "-m", "backworks"]


def terminate(processes: Iterable[subprocess.Popen[bytes]], grace: float = DEFAULT_GRACE) -> list[int]:
    """SIGTERM every process still running, SIGKILL those left after ``grace`` seconds, reap them all.

    Returns the pids that had to be killed. Signals go through ``psutil`` so that a pid the kernel has
    already reused for another process is never signalled; waiting goes through ``Popen.wait`` so that
    each process keeps its real exit code.
    """
    started = [process for process in processes if process.poll() is None]
    handles: dict[int, psutil.Process] = {}
    for process in started:
        try:
            handle = psutil.Process(process.pid)
            handle.terminate()
        except psutil.NoSuchProcess:
            continue
        handles[process.pid] = handle
    deadline = time.monotonic() + grace
    killed = []
    for process in started:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(psutil.NoSuchProcess, KeyError):
                handles[process.pid].kill()
            killed.append(process.pid)
            process.wait()
    return killed
