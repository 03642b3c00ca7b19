"""The gateway follows the blueprint revisions in ``bw_config``: routes switch without a restart.

On a new revision the gateway loads it, waits (bounded) until every stage its new itineraries add has a live
replica (an added instance's replicas are being started), then swaps its route table in one assignment: requests
that started before keep their ``Pipeline`` (and revision) to the end; requests that start after are matched against
the new routes and stamped with the new revision. It also answers ``backworks apply``'s probe.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from backworks.contracts.revision import ProbeAnswer
from backworks.gateway.state import GatewayState
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.errors import RevisionError
from backworks.pipeline.fleetprobe import ProbeResponder, problems_with
from backworks.pipeline.revisions import RevisionFollower, RevisionStore, load

log = structlog.get_logger("backworks.gateway")

STAGES_LIVE_TIMEOUT = 30.0
"""Seconds a switch waits for the stages a new revision routes to to have a live replica; then it switches anyway
(and says which are missing)."""
STAGES_LIVE_POLL = 0.05


async def follow(state: GatewayState) -> None:
    """Start following revisions and answering probes (nothing when the broker has no ``bw_config``)."""
    if state.js is None or state.client is None:
        return
    try:
        store = await RevisionStore.open(state.js)
    except RevisionError:
        log.info("no bw_config bucket: the gateway serves its blueprint file without revisions")
        return

    async def take(number: int) -> None:
        await switch_to(state, load(await store.get(number)), number)

    async def answer(candidate: dict[str, Any] | None) -> ProbeAnswer:
        return ProbeAnswer(role="gateway", name=state.gateway_id, replica=state.gateway_id, revision=state.revision,
                           problems=problems_with(candidate))  # fmt: skip

    state.follower = RevisionFollower(state.js, take, state.revision)
    state.probe = ProbeResponder(state.client, answer)
    await state.follower.start()
    await state.probe.start()


async def unfollow(state: GatewayState) -> None:
    if state.probe is not None:
        await state.probe.stop()
    if state.follower is not None:
        await state.follower.stop()


def needed(loaded: LoadedBlueprint) -> set[str]:
    return {stage.instance for endpoint in loaded.model.endpoints for stage in loaded.itinerary(endpoint)}


async def switch_to(state: GatewayState, loaded: LoadedBlueprint, number: int) -> None:
    """Serve revision ``number`` from now on."""
    forwarder = state.forwarder
    if forwarder is not None:
        forwarder.know({name: item.spec.breaker for name, item in loaded.instances.items()})
        deadline = time.monotonic() + STAGES_LIVE_TIMEOUT
        # Only stages new to this gateway: one already routed to that has no replica now is no reason to wait.
        added = needed(loaded) - needed(state.blueprint)
        while missing := sorted(name for name in added if not forwarder.liveness.count(name)):
            if time.monotonic() > deadline:
                log.warning("switching although stages have no live replica", revision=number, missing=missing)
                break
            await asyncio.sleep(STAGES_LIVE_POLL)
    state.blueprint = loaded
    state.revision = number
    if state.on_switch is not None:
        state.on_switch(loaded, number)
    log.info("blueprint revision switched", revision=number, endpoints=sorted(loaded.model.endpoints))
