"""Canary splits at the gateway: which branch of each split a request takes, chosen as its itinerary is built.

Weighted random by default; a sticky split hashes a key of the request instead, so the same caller (or the
same header value) takes the same branch on every request, on every gateway replica and across restarts:
the hash is a fixed function (BLAKE2b) of the endpoint, the split's name and the key. ``sticky: consumer`` keys
on the credentials the request carries (the headers and query parameters the chain's security plugins read,
as declared by their ``credentials(config)``), else on the client address: the gateway picks before any
stage has authenticated the caller, so it cannot use the consumer name a security stage will find.

A split rolled back (``gateway.rollback``) sends every request to its baseline.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.splits import STICKY_CONSUMER, Split
from backworks.pipeline import credentials
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.splits import SplitKey, split_key

HASH_BYTES = 8
HASH_SPACE = float(1 << (8 * HASH_BYTES))
KEY_SEPARATOR = "\x00"

Held = Callable[[str, str, Split], str | None]
"""``held(endpoint, split name, split)``: the branch a rollback holds the split to, or None."""


def sticky_point(endpoint: str, name: str, key: str) -> float:
    """Where ``key`` falls in [0, 1) for this split: the same on every gateway, every run."""
    digest = hashlib.blake2b(KEY_SEPARATOR.join((endpoint, name, key)).encode(), digest_size=HASH_BYTES).digest()
    return int.from_bytes(digest, "big") / HASH_SPACE


def branch_at(split: Split, point: float) -> str:
    """The branch whose share of the weights covers ``point`` (in [0, 1)); zero weights are never chosen."""
    target = point * sum(split.split.values())
    cumulative = 0
    chosen = split.baseline
    for branch, weight in split.split.items():
        if weight == 0:
            continue
        cumulative += weight
        chosen = branch
        if target < cumulative:
            break
    return chosen


def sticky_key(split: Split, envelope: Envelope) -> str | None:
    """What a sticky split hashes for this request, or None (not sticky, or nothing to stick by: random)."""
    if split.sticky == STICKY_CONSUMER:
        found = credentials.values_in(envelope.headers, envelope.query)
        if found:
            return KEY_SEPARATOR.join(sorted(found))
        return envelope.client
    header = split.sticky_header
    if header is not None:
        return envelope.header(header)
    return None


@dataclass
class EndpointSplits:
    """One endpoint's splits and the itinerary of every combination of their branches."""

    endpoint: str
    splits: dict[str, Split]
    itineraries: dict[SplitKey, list[Stage]]
    draw: Callable[[], float] = field(default=random.random)

    @classmethod
    def of(cls, loaded: LoadedBlueprint, endpoint: str) -> EndpointSplits | None:
        """The endpoint's splits, or None when its chain has none."""
        splits = loaded.model.splits(endpoint)
        if not splits:
            return None
        itineraries = {split_key(picks): itinerary for picks, itinerary in loaded.itineraries(endpoint)}
        return cls(endpoint, splits, itineraries)

    def choose(self, envelope: Envelope, held: Held | None = None) -> dict[str, str]:
        """The branch ``envelope`` takes at each split."""
        picks: dict[str, str] = {}
        for name, split in self.splits.items():
            forced = held(self.endpoint, name, split) if held is not None else None
            if forced is not None:
                picks[name] = forced
                continue
            key = sticky_key(split, envelope)
            point = sticky_point(self.endpoint, name, key) if key is not None else self.draw()
            picks[name] = branch_at(split, point)
        return picks

    def route(self, envelope: Envelope, held: Held | None = None) -> None:
        """Choose the branches, record them in the envelope and give it their itinerary."""
        picks = self.choose(envelope, held)
        envelope.branches = picks
        envelope.itinerary = list(self.itineraries[split_key(picks)])
