"""Asking the running fleet about revisions: which one each service runs, and whether it could run a candidate.

``backworks apply`` publishes one request on ``bw.config.probe`` (core NATS) and gathers the answers that arrive
within a short window: every gateway and every stage replica answers for itself (``ProbeResponder``), so a replica
whose plugins cannot take a candidate blueprint is named before anything switches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from pydantic import ValidationError

from backworks.contracts.errors import BlueprintError
from backworks.contracts.names import CONFIG_PROBE_SUBJECT
from backworks.contracts.revision import ProbeAnswer
from backworks.pipeline import blueprints

log = structlog.get_logger("backworks.revisions")

PROBE_WINDOW = 0.5
"""Seconds answers to one probe are gathered for (loopback answers come in milliseconds)."""
CANDIDATE_WINDOW = 1.5
"""Seconds answers to a probe with a candidate blueprint are gathered for: each replica validates it with its own
plugins first, which takes tens of milliseconds on a quiet machine and far more on a loaded one; a replica that
answers later is not heard, so its veto would be missed."""

Answer = Callable[[dict[str, Any] | None], Awaitable[ProbeAnswer]]


async def ask(
    client: Client, candidate: dict[str, Any] | None = None, window: float = PROBE_WINDOW
) -> list[ProbeAnswer]:
    """Every answer to one probe; ``candidate``: ``{"blueprint": data, "source": path}`` to have checked."""
    answers: list[ProbeAnswer] = []
    inbox = client.new_inbox()

    async def collect(msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status") == "503":
            return  # the broker's "no responders": nobody subscribes to the probe, so nobody answers
        try:
            answers.append(ProbeAnswer.model_validate_json(msg.data))
        except ValidationError:
            log.warning("unreadable probe answer", subject=msg.subject)

    subscription = await client.subscribe(inbox, cb=collect)
    try:
        await client.publish(CONFIG_PROBE_SUBJECT, json.dumps({"candidate": candidate}).encode(), reply=inbox)
        await client.flush()
        await asyncio.sleep(window)
    finally:
        await subscription.unsubscribe()
    return answers


def problems_with(candidate: dict[str, Any] | None) -> list[str]:
    """Why this process could not run ``candidate`` (validated with the plugins installed here); empty: it could."""
    if not candidate:
        return []
    try:
        blueprints.validate(candidate["blueprint"], str(candidate["source"]))
    except BlueprintError as exc:
        return [str(issue) for issue in exc.issues]
    except (KeyError, TypeError) as exc:
        return [f"unreadable candidate: {exc!r}"]
    return []


class ProbeResponder:
    """Answers ``bw.config.probe`` for one service."""

    def __init__(self, client: Client, answer: Answer) -> None:
        self.client = client
        self.answer = answer
        self.subscription: Subscription | None = None

    async def start(self) -> None:
        self.subscription = await self.client.subscribe(CONFIG_PROBE_SUBJECT, cb=self._on_probe)
        await self.client.flush()  # the broker knows the subscription once started: a probe sent now is answered

    async def stop(self) -> None:
        if self.subscription is not None:
            with contextlib.suppress(ConnectionClosedError):  # the owner closed the connection first: nothing to undo
                await self.subscription.unsubscribe()
            self.subscription = None

    async def _on_probe(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            candidate = json.loads(msg.data or b"{}").get("candidate")
            answer = await self.answer(candidate)
            await self.client.publish(msg.reply, answer.model_dump_json().encode())
        except Exception:
            log.exception("probe not answered")
