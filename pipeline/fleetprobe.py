"""Asking the running fleet about revisions: which one each service runs, and whether it could run a candidate.

``backworks apply`` publishes one request on ``bw.config.probe`` (core NATS) and gathers the answers that arrive
within a short window: every gateway and every stage replica answers for itself (``ProbeResponder``), so a replica
whose plugins cannot take a candidate blueprint is named before anything switches. Asked about a candidate, a
service first says it is checking it and then gives its verdict, so a slow check is waited for, not missed.
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
CANDIDATE_PATIENCE = 10.0
"""Seconds a service that said it is checking a candidate blueprint is waited for: each replica validates it with
its own plugins, which takes tens of milliseconds on a quiet machine and far more on a loaded one. One that has not
given its verdict by then counts as refusing (its veto must not be missed)."""

Answer = Callable[[dict[str, Any] | None], Awaitable[ProbeAnswer]]
Responder = tuple[str, str, str]
"""One service answering probes: role, name, replica."""


def who(answer: ProbeAnswer) -> Responder:
    """The service that gave ``answer``."""
    return answer.role, answer.name, answer.replica


async def ask(
    client: Client,
    candidate: dict[str, Any] | None = None,
    window: float = PROBE_WINDOW,
    patience: float = CANDIDATE_PATIENCE,
    enough: Callable[[list[ProbeAnswer]], bool] | None = None,
) -> list[ProbeAnswer]:
    """Every answer to one probe; ``candidate``: ``{"blueprint": data, "source": path}`` to have checked.

    Services answer within ``window``. Asked about a candidate, each first says it is checking, then gives its
    verdict: the verdicts of all who said so are waited for, up to ``patience`` seconds; one that does not come
    in time is an answer naming that as its problem. ``enough`` ends a status probe's window early once the answers
    heard so far satisfy it (a service answering after that is not among those returned).
    """
    verdicts: dict[Responder, ProbeAnswer] = {}
    checking: dict[Responder, ProbeAnswer] = {}
    complete = asyncio.Event()
    heard_all = asyncio.Event()
    inbox = client.new_inbox()

    async def collect(msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status") == "503":
            return  # the broker's "no responders": nobody subscribes to the probe, so nobody answers
        try:
            answer = ProbeAnswer.model_validate_json(msg.data)
        except ValidationError:
            log.warning("unreadable probe answer", subject=msg.subject)
            return
        if answer.checking:
            checking.setdefault(who(answer), answer)
            return
        verdicts[who(answer)] = answer
        if checking.keys() <= verdicts.keys():
            complete.set()
        if enough is not None and candidate is None and enough(list(verdicts.values())):
            heard_all.set()

    subscription = await client.subscribe(inbox, cb=collect)
    try:
        await client.publish(CONFIG_PROBE_SUBJECT, json.dumps({"candidate": candidate}).encode(), reply=inbox)
        await client.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard_all.wait(), window)
        if candidate is not None and not checking.keys() <= verdicts.keys():
            complete.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(complete.wait(), patience)
    finally:
        await subscription.unsubscribe()
    late = [
        answer.model_copy(
            update={"checking": False, "problems": [f"gave no verdict on the candidate within {patience:g} s"]}
        )
        for key, answer in checking.items()
        if key not in verdicts
    ]
    return [*verdicts.values(), *late]


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
            if candidate is not None:  # the asker learns at once to wait for this service's verdict
                first = await self.answer(None)
                await self.client.publish(
                    msg.reply, first.model_copy(update={"checking": True}).model_dump_json().encode()
                )
                await self.client.flush()  # out now: checking may hold the event loop for a while
            answer = await self.answer(candidate)
            await self.client.publish(msg.reply, answer.model_dump_json().encode())
        except Exception:
            log.exception("probe not answered")
