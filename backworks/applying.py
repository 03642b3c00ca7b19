"""``backworks apply``: change a running API to a new blueprint revision without failing a request.

Validate (done by the caller), diff against the current revision, ask the fleet whether every service could run it
(refused, naming the replica and why, before anything switches), trust the identities it adds (embedded broker),
store it, then wait until the gateways and the replicas of changed and added instances report they run it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from nats.aio.client import Client

from backworks.contracts.revision import ProbeAnswer, Revision
from backworks.pipeline import broker, nats_auth
from backworks.pipeline.blueprint_diff import BlueprintDiff, diff
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.fleetprobe import ask, who
from backworks.pipeline.permissions import identities, widened
from backworks.pipeline.revisions import RevisionStore, encode, load

DEFAULT_APPLY_TIMEOUT = 60.0
"""Seconds ``apply`` waits for the fleet to report the new revision."""
WAIT_POLL = 0.1
SUPERVISOR = "supervisor"
"""Role of ``backworks up``'s answer to the probe: it starts the replicas of added instances."""


@dataclass
class ApplyResult:
    """What an apply did."""

    diff: BlueprintDiff
    revision: Revision | None = None
    """The revision stored (None: nothing changed, or it was refused)."""
    previous: int | None = None
    refused: list[str] = field(default_factory=list)
    """Why the fleet could not run it: one line per replica and problem."""
    confirmed: bool = False
    """Every gateway and every replica that must run it reported it within the timeout."""
    waiting_for: list[str] = field(default_factory=list)
    """Services that had not reported the revision when the wait ended."""
    needs: dict[str, int] = field(default_factory=dict)
    """Instances added with nobody to start their replicas (no ``backworks up``): instance -> replicas."""
    switch_s: float = 0.0
    """Seconds from storing the revision to the fleet reporting it."""

    def as_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision.number if self.revision else None,
            "previous": self.previous,
            "changes": self.diff.as_dict(),
            "summary": self.diff.summary(),
            "refused": self.refused,
            "confirmed": self.confirmed,
            "waiting_for": self.waiting_for,
            "needs": self.needs,
            "switch_s": round(self.switch_s, 3),
        }


def refusals(answers: list[ProbeAnswer], loaded: LoadedBlueprint) -> list[str]:
    """The problems services that will run ``loaded`` reported (a removed instance's replicas do not count)."""
    lines = []
    for answer in answers:
        if answer.role == "stage" and answer.name not in loaded.instances:
            continue
        who = f"{answer.role} {answer.name}" + (f" (replica {answer.replica})" if answer.role == "stage" else "")
        lines += [f"{who}: {problem}" for problem in answer.problems]
    return lines


def lagging(answers: list[ProbeAnswer], number: int, must: set[str], seen_gateway: bool) -> list[str]:
    """Who has not reported revision ``number`` yet: every gateway, every replica of the ``must`` instances."""
    behind = [
        f"{a.role} {a.name}" + (f" ({a.replica})" if a.role == "stage" else "")
        for a in answers
        if (a.role == "gateway" or (a.role == "stage" and a.name in must)) and (a.revision or 0) < number
    ]
    if seen_gateway and not any(a.role == "gateway" for a in answers):
        behind.append("gateway (none answered)")
    answered = {a.name for a in answers if a.role == "stage"}
    behind += [f"stage {name} (no replica answered)" for name in sorted(must - answered)]
    return behind


async def apply(
    servers: list[str], loaded: LoadedBlueprint, message: str, timeout: float = DEFAULT_APPLY_TIMEOUT
) -> ApplyResult:
    """Apply ``loaded`` (already validated) to the fleet on ``servers`` as the admin identity."""
    client = await broker.connect(servers, name="backworks-apply", settings=loaded.model.nats)
    try:
        return await _apply(client, servers, loaded, message, timeout)
    finally:
        await client.drain()


async def _apply(
    client: Client, servers: list[str], loaded: LoadedBlueprint, message: str, timeout: float
) -> ApplyResult:
    store = await RevisionStore.open(broker.jetstream(client))
    current = await store.current()
    if current is not None:
        if json.loads(encode(loaded.data)) == current.blueprint:
            return ApplyResult(BlueprintDiff(), previous=current.number)
        changes = diff(load(current), loaded)
    else:
        changes = BlueprintDiff(instances_added=tuple(sorted(loaded.instances)),
                                endpoints_added=tuple(sorted(loaded.model.endpoints)))  # fmt: skip
    candidate = {"blueprint": json.loads(encode(loaded.data)), "source": str(loaded.path.resolve())}
    before = await ask(client, candidate)
    refused = refusals(before, loaded)
    if refused:
        return ApplyResult(changes, previous=current.number if current else None, refused=refused)
    keyring = nats_auth.keyring()
    if keyring.governs(servers):  # the embedded broker: trust what the revision adds (auth.conf rewritten, SIGHUP)
        recorded = keyring.entries()
        keyring.admit(widened(identity, recorded.get(identity.name)) for identity in identities(loaded).values())
    revision, previous = await store.store(loaded, message)
    result = ApplyResult(changes, revision, previous.number if previous else None)
    supervised = any(a.role == SUPERVISOR for a in before)
    if not supervised:
        result.needs = {name: loaded.instances[name].spec.replicas for name in changes.instances_added}
    must = set(changes.instances_changed) | (set(changes.instances_added) if supervised else set())
    seen_gateway = any(a.role == "gateway" for a in before)
    known = {who(a) for a in before if a.role == "gateway" or (a.role == "stage" and a.name in must)}

    def everyone_reports_it(answers: list[ProbeAnswer]) -> bool:
        """Every service known to have to switch answered, and nobody is behind: no need to listen longer."""
        return known <= {who(a) for a in answers} and not lagging(answers, revision.number, must, seen_gateway)

    started = time.monotonic()
    while True:
        answers = await ask(client, enough=everyone_reports_it)
        result.waiting_for = lagging(answers, revision.number, must, seen_gateway)
        if not result.waiting_for:
            result.confirmed = True
            break
        if time.monotonic() - started > timeout:
            break
        await asyncio.sleep(WAIT_POLL)
    result.switch_s = time.monotonic() - started
    return result
