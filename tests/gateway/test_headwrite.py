"""A response's head goes out with its body in one write, or alone at the loop's next turn; nothing is reordered."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from backworks.gateway.headwrite import HeadFirstTransport


class Recording:
    """A transport that records what reaches the socket, one entry per write call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


def wrapped() -> tuple[Recording, HeadFirstTransport]:
    socket = Recording()
    return socket, HeadFirstTransport(cast(asyncio.Transport, socket), asyncio.get_running_loop())


async def test_head_and_body_are_one_write_and_later_writes_pass_straight_through() -> None:
    socket, transport = wrapped()
    transport.write(b"HEAD")
    assert socket.writes == []
    transport.write(b"body")
    transport.write(b"more")
    assert socket.writes == [b"HEADbody", b"more"]
    await asyncio.sleep(0)
    assert socket.writes == [b"HEADbody", b"more"]  # the pending flush finds nothing held


async def test_a_head_alone_goes_out_at_the_next_turn_of_the_loop() -> None:
    socket, transport = wrapped()
    transport.write(b"HEAD")
    await asyncio.sleep(0)
    assert socket.writes == [b"HEAD"]
    transport.write(b"chunk")
    assert socket.writes == [b"HEAD", b"chunk"]


async def test_closing_sends_what_is_held_first_and_a_closed_socket_gets_nothing() -> None:
    socket, transport = wrapped()
    transport.write(b"HEAD")
    transport.close()
    assert (socket.writes, socket.closed) == ([b"HEAD"], True)
    late_socket, late = wrapped()
    late.write(b"HEAD")
    late_socket.closed = True  # the client went away before the loop turned
    await asyncio.sleep(0)
    assert late_socket.writes == []
    assert late.get_extra_info("peername") == "extra peername"
