"""What a stage host tells JetStream about one message: decided once, as a value, applied at one site.

Like FastStream's ``AckMessage`` / ``NackMessage`` / ``RejectMessage``, but returned rather than raised: the
stage host's ``decide`` returns exactly one ``Settlement`` per message and ``settle`` is the only place that
acks, naks or terminates a pipeline message.
"""

from __future__ import annotations

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


async def settle(msg: Msg, settlement: Settlement) -> None:
    """Apply ``settlement`` to ``msg``."""
    if isinstance(settlement, Ack):
        await msg.ack()
    elif isinstance(settlement, Nak):
        await msg.nak(delay=settlement.delay)
    else:
        await msg.term()
