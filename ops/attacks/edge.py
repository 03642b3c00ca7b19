"""Attack the HTTP edge of a real ``backworks up`` and measure the gateway: ``python ops/attacks/edge.py``.

Replays the security review's attacks (issue 9) on free loopback ports, with legitimate traffic running
alongside, and reports the gateway process's RSS (psutil) before, at its peak and after each one:

1. ``--big`` concurrent requests with a ``--header-mb`` MB header each, twice over;
2. ``--slow`` connections sending their headers a byte a second (slowloris), then as many sending a body
   that way (slow body);
3. ``--idle`` sockets opened and left silent, the whole stack started with ``ulimit -n --nofile``.

Nothing here asserts: it prints what happened (tests/gateway/test_edge.py holds the assertions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello" / "blueprint.yaml"
BACKWORKS = str(Path(sys.executable).parent / "backworks")
MB = 1024 * 1024
SAMPLE_EVERY_S = 0.1


@dataclass
class Legit:
    """Legitimate clients (a fresh connection per request) running while an attack does."""

    base: str
    threads: int = 4
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.get(f"{self.base}/hello/legit", timeout=5)
                if response.status_code == 200:
                    self.ok += 1
                    continue
                kind = str(response.status_code)
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
            self.failed += 1
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def __enter__(self) -> Legit:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

    def summary(self) -> str:
        return f"legit requests: {self.ok} ok, {self.failed} failed {self.errors or ''}".strip()


class RssSampler:
    """Samples a process's RSS every ``SAMPLE_EVERY_S`` in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:
        return float(self.process.memory_info().rss) / MB

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssSampler:
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def limit_files(count: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return apply


@contextlib.contextmanager
def backworks_up(blueprint: Path, port: int, nofile: int, workdir: Path) -> Iterator[int]:
    """``backworks up`` under ``ulimit -n nofile``; yields the gateway's pid once healthy."""
    log = (workdir / "up.log").open("ab")
    env = {**os.environ, "BACKWORKS_LOG_FORMAT": "json"}
    up = subprocess.Popen(
        [BACKWORKS, "up", str(blueprint), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=env,
        preexec_fn=limit_files(nofile),  # only sets a limit (ulimit -n) in the child
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"http://127.0.0.1:{port}/_backworks/health", timeout=2).json()["status"] == "healthy":
                    break
            time.sleep(0.2)
        else:
            raise SystemExit(f"backworks up not healthy within 60 s; see {workdir / 'up.log'}")
        gateway = next(p for p in psutil.Process(up.pid).children(recursive=True) if "gateway" in " ".join(p.cmdline()))
        yield gateway.pid
    finally:
        up.terminate()
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()


def send_big_header(port: int, size: int, answers: dict[str, int]) -> None:
    request = b"GET /hello/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(request)
            answer = sock.recv(64)
        key = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "closed"
    except OSError as exc:
        key = type(exc).__name__
    answers[key] = answers.get(key, 0) + 1


def big_headers(port: int, count: int, size: int) -> dict[str, int]:
    answers: dict[str, int] = {}
    threads = [threading.Thread(target=send_big_header, args=(port, size, answers)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def open_sockets(port: int, count: int) -> list[socket.socket]:
    opened = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            continue
        sock.setblocking(False)
        opened.append(sock)
    return opened


def still_open(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has not closed (a read gives EOF, a reset, or data then EOF)."""
    alive = 0
    for sock in sockets:
        try:
            while sock.recv(65536):  # an answer (408...) may come first: closed means EOF after it
                pass
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


SLOW_HEAD = b"GET /hello/x HTTP/1.1\r\nHost: a\r\n"
SLOW_BODY = b"POST /hello/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"


def slowloris(port: int, count: int, seconds: float, start: bytes = SLOW_HEAD) -> tuple[int, int]:
    """``count`` connections that send ``start`` then a byte a second for ``seconds``; how many stayed open."""
    sockets = open_sockets(port, count)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.send(start)
    ended = time.monotonic() + seconds
    while time.monotonic() < ended:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(b"X")
        time.sleep(1)
    alive = still_open(sockets)
    for sock in sockets:
        sock.close()
    return len(sockets), alive


def report(attack: str, legit: Legit, rss: RssSampler) -> None:
    print(f"{attack}; {legit.summary()}; gateway RSS peak {rss.peak:.1f} MB, after {rss.now():.1f} MB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blueprint", type=Path, default=EXAMPLE)
    parser.add_argument("--big", type=int, default=40, help="concurrent big-header requests per wave")
    parser.add_argument("--header-mb", type=float, default=7.0)
    parser.add_argument("--slow", type=int, default=200, help="slowloris connections")
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    parser.add_argument("--slow-body-seconds", type=float, default=35.0)
    parser.add_argument("--idle", type=int, default=1100, help="idle sockets")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--nofile", type=int, default=1024, help="ulimit -n of the backworks processes")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this script holds the attacking sockets
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="bw-attack-") as tmp,
        backworks_up(args.blueprint, port, args.nofile, Path(tmp)) as pid,
    ):
        rss = RssSampler(pid)
        print(f"gateway pid {pid}, ulimit -n {args.nofile}, RSS at start {rss.now():.1f} MB", flush=True)

        with rss, Legit(base) as legit:
            waves = [big_headers(port, args.big, int(args.header_mb * MB)) for _ in range(2)]
            time.sleep(1)
        report(f"{args.big} x {args.header_mb:g} MB headers, twice: answers {waves}", legit, rss)

        with rss, Legit(base) as legit:
            opened, alive = slowloris(port, args.slow, args.slow_seconds)
        report(f"slowloris: {opened} connections sending a byte a second for {args.slow_seconds:g} s, "
               f"{alive} still open at the end", legit, rss)  # fmt: skip

        with rss, Legit(base) as legit:
            opened, alive = slowloris(port, args.slow, args.slow_body_seconds, SLOW_BODY)
        report(f"slow body: {opened} connections sending a body a byte a second for {args.slow_body_seconds:g} s, "
               f"{alive} still open at the end", legit, rss)  # fmt: skip

        with rss, Legit(base) as legit:
            idle = open_sockets(port, args.idle)
            time.sleep(args.idle_seconds)
            alive = still_open(idle)
            for sock in idle:
                sock.close()
        report(
            f"idle: {len(idle)} silent sockets for {args.idle_seconds:g} s, {alive} still open at the end", legit, rss
        )
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"{base}/_backworks/health", timeout=5).json()
            print("health edge:", json.dumps(health.get("edge")), "inbox:", json.dumps(health.get("inbox")))
        print(f"RSS at the end {rss.now():.1f} MB", flush=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return 0


if __name__ == "__main__":
    sys.exit(main())
