"""Starting real ``backworks`` processes for end-to-end tests, and making sure they all stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from backworks.local.processes import terminate

BACKWORKS = str(Path(sys.executable).parent / "backworks")


def start(*args: str, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``backworks ARGS`` with JSON logs into ``log``; ``env`` adds to (or overrides) this process's environment."""
    environment = {**os.environ, "BACKWORKS_LOG_FORMAT": "json", **(env or {})}
    with log.open("ab") as out:
        return subprocess.Popen([BACKWORKS, *args], stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=cwd)


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> float:
    """SIGTERM and wait; returns how long it took. Kills (and fails later checks) if it hangs."""
    started = time.monotonic()
    terminate([process], timeout)
    return time.monotonic() - started


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Every descendant pid, read from /proc (children started in new sessions included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current:
                found.append(child)
                frontier.append(child)
    return found


def wait_http(url: str, timeout: float = 60.0, ok: tuple[int, ...] = (200,)) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code in ok:
                return response
            last = response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout} s: {last!r}")


def wait_healthy(
    base: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> dict[str, Any]:
    """Wait for a healthy gateway and return its health body; fail at once (with the log) if ``process`` exits."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"exited with code {process.returncode} before becoming healthy:\n{tail}")
        try:
            body = httpx.get(f"{base}/_backworks/health", timeout=2.0).json()
            if body.get("status") == "healthy":
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"not healthy within {timeout} s: {body}")
