"""What a stage host tells JetStream about one message: decided once, as a value, applied at one site.

Like FastStream's ``AckMessage`` / ``NackMessage`` / ``RejectMessage``, but returned rather than raised: the
stage host's ``decide`` returns exactly one ``Settlement`` per message and ``settle`` is the only place that
acks, naks or terminates a pipeline message.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

from nats.aio.msg import Msg


@dataclass(frozen=True)
class Ack:
    """Done with the message: its hand-off is stored, or dropping it is deliberate (deadline passed)."""


@dataclass(frozen=True)
class Nak:
    """Redeliver the message after ``delay`` seconds (the hand-off failed and may work later)."""

    delay: float


@dataclass(frozen=True)
class Term:
    """Never redeliver the message: no delivery can succeed (unreadable or misrouted)."""

    reason: str


Settlement = Ack | Nak | Term

ACK = Ack()


def settle(msg: Msg, settlement: Settlement) -> Awaitable[None]:
    """Apply ``settlement`` to ``msg`` (await the result).

    A plain function returning the ack/nak/term coroutine rather than a coroutine itself: one frame less on
    every message a stage host settles.
    """
    if isinstance(settlement, Ack):
        return msg.ack()
    if isinstance(settlement, Nak):
        return msg.nak(delay=settlement.delay)
    return msg.term()
