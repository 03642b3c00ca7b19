"""Free loopback ports: chosen outside the kernel's ephemeral range, so no outgoing connection can take one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from backworks.local import ports
from backworks.local.ports import DEFAULT_EPHEMERAL, LOWEST_PORT, ephemeral_range, free_port


def test_a_free_port_is_outside_the_ephemeral_range_and_can_be_bound() -> None:
    low, high = ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert all(LOWEST_PORT <= port < low or high < port <= 65535 for port in ports), sorted(ports)
    assert len(ports) > 1, "chosen at random, not one fixed port"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_port_in_use_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", free_port()))
        busy = taken.getsockname()[1]
        # Two candidates left: busy - 1 and busy; the one in use must never come back.
        monkeypatch.setattr(ports, "LOWEST_PORT", busy - 1)
        chosen = {free_port(ephemeral=(busy + 1, 65535)) for _ in range(30)}
    assert busy not in chosen


def test_when_the_range_leaves_no_room_the_os_picks() -> None:
    port = free_port(ephemeral=(1024, 65535))
    assert 1024 <= port <= 65535


def test_the_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text("40000\t50000\n")
    assert ephemeral_range(source) == (40000, 50000)
    source.write_text("garbage")
    assert ephemeral_range(source) == DEFAULT_EPHEMERAL
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL
