"""Rolling aggregates of the event stream: per endpoint, per plugin instance, per consumer, in minute buckets.

Each bucket holds, per key, a count, status classes, errors, skips, failures by kind and a latency
HdrHistogram (µs, 2 significant digits); a report over the last N minutes merges the buckets it covers, so
any window up to ``RETENTION_S`` is answered exactly (to the histogram's precision). Events are counted once:
``event_id``s seen within the retention are remembered, so a redelivery changes nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hdrh.histogram import HdrHistogram

from backworks.contracts.names import BREAKER_EVENT_PREFIX, REQUEST_RESPONDED_SUBJECT, STAGE_COMPLETED_SUBJECT
from backworks.tap.recent import RecentRequests

BUCKET_S = 60
RETENTION_S = 3600
"""The longest window a report covers; older buckets are dropped."""
LOWEST_US = 1
HIGHEST_US = 600_000_000
SIGNIFICANT_DIGITS = 2
STAGE_FAILURE_PREFIX = "bw.evt.stage."
NOT_RUN = "unavailable"
"""A stage failure kind meaning the stage never ran (skipped for want of a replica or an open breaker)."""
PERCENTILES = (50.0, 95.0, 99.0)


class Dimension(str, Enum):
    """What a tally is kept per."""

    ENDPOINT = "endpoints"
    """Per endpoint (route name), from responded events."""
    INSTANCE = "instances"
    """Per plugin instance, from the stage durations of responded events, from stage failed/skipped events and
    from breaker transitions."""
    CONSUMER = "consumers"
    """Per authenticated caller, from responded events that name one."""
    BRANCH = "branches"
    """Per branch of a canary split (``<endpoint>/<split>=<instance>``), from responded events."""


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass
class Tally:
    """What one key did in one bucket (or, merged, over a window)."""

    count: int = 0
    errors: int = 0
    skips: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latency: HdrHistogram = field(default_factory=new_histogram)
    transitions: Counter[str] = field(default_factory=Counter)
    """Breaker transitions, by the state they went to (``open``, ``half-open``, ``closed``)."""
    last_transition: dict[str, Any] | None = None
    """The newest breaker transition: ``{"from", "to", "at"}``."""

    def record_transition(self, event: dict[str, Any], at: float) -> None:
        to = str(event.get("to_state") or "?")
        self.transitions[to] += 1
        if self.last_transition is None or at >= self.last_transition["at"]:
            self.last_transition = {"from": str(event.get("from_state") or "?"), "to": to, "at": at}

    def record_ms(self, ms: float) -> None:
        self.latency.record_value(min(max(int(ms * 1000), LOWEST_US), HIGHEST_US))

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.errors += other.errors
        self.skips += other.skips
        self.statuses.update(other.statuses)
        self.failures.update(other.failures)
        self.latency.add(other.latency)
        self.transitions.update(other.transitions)
        newer = other.last_transition
        if newer is not None and (self.last_transition is None or newer["at"] >= self.last_transition["at"]):
            self.last_transition = newer

    def p(self, percentile: float) -> float | None:
        if self.latency.get_total_count() == 0:
            return None
        return round(int(self.latency.get_value_at_percentile(percentile)) / 1000, 3)

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "error_rate": round(self.errors / self.count, 4) if self.count else 0.0,
            "statuses": dict(sorted(self.statuses.items())),
            "skips": self.skips,
            "failures": dict(self.failures),
            **{f"p{int(q)}_ms": self.p(q) for q in PERCENTILES},
        }

    def breaker_summary(self) -> dict[str, Any]:
        """An instance's breaker transitions in the window: counts by to-state, and the newest one."""
        return {"breaker_transitions": dict(sorted(self.transitions.items())), "last_transition": self.last_transition}


Bucket = dict[tuple[Dimension, str], Tally]


class Aggregates:
    """Minute buckets of tallies, fed with events, asked for windows."""

    def __init__(self) -> None:
        self.buckets: dict[int, Bucket] = {}
        self.seen: dict[str, float] = {}
        self.events = 0
        self.duplicates = 0
        self.recent = RecentRequests()
        """The last requests answered, with their stages' timelines (the dashboard's list)."""

    def add(self, subject: str, event: dict[str, Any]) -> None:
        """Count one event (once, however often it is delivered)."""
        event_id = event.get("event_id")
        at = event.get("at")
        at = float(at) if isinstance(at, int | float) else time.time()
        if isinstance(event_id, str):
            if event_id in self.seen:
                self.duplicates += 1
                return
            self.seen[event_id] = at
        self.events += 1
        bucket = self.buckets.setdefault(int(at // BUCKET_S), {})
        if subject == REQUEST_RESPONDED_SUBJECT:
            self._responded(bucket, event)
            self.recent.add(event)
        elif subject == STAGE_COMPLETED_SUBJECT:
            pass  # counted from the responded event's ``stages`` (published whether or not these are)
        elif subject.startswith(BREAKER_EVENT_PREFIX) and "instance" in event:
            self._tally(bucket, Dimension.INSTANCE, str(event["instance"])).record_transition(event, at)
        elif subject.startswith(STAGE_FAILURE_PREFIX) and "kind" in event:
            tally = self._tally(bucket, Dimension.INSTANCE, instance_of(event.get("stage")))
            kind = str(event["kind"])
            tally.failures[kind] += 1
            if event.get("skipped"):
                tally.skips += 1
            if kind != NOT_RUN:
                tally.errors += 1

    def _responded(self, bucket: Bucket, event: dict[str, Any]) -> None:
        status = event.get("status")
        if not isinstance(status, int):
            return
        for stage in event.get("stages") or []:
            if isinstance(stage, dict):
                tally = self._tally(bucket, Dimension.INSTANCE, instance_of(stage.get("stage")))
                tally.count += 1
                if isinstance(ms := stage.get("ms"), int | float):
                    tally.record_ms(ms)
        keys = [(Dimension.ENDPOINT, str(event.get("route") or "?"))]
        if consumer := event.get("consumer"):
            keys.append((Dimension.CONSUMER, str(consumer)))
        branches = event.get("branches")
        if isinstance(branches, dict):
            keys += [(Dimension.BRANCH, branch_key(event.get("route"), name, b)) for name, b in branches.items()]
        for dimension, key in keys:
            tally = self._tally(bucket, dimension, key)
            tally.count += 1
            tally.statuses[f"{status // 100}xx"] += 1
            if status >= 500:
                tally.errors += 1
            if event.get("degraded"):
                tally.skips += 1
            if isinstance(ms := event.get("total_ms"), int | float):
                tally.record_ms(ms)

    @staticmethod
    def _tally(bucket: Bucket, dimension: Dimension, key: str) -> Tally:
        found = bucket.get((dimension, key))
        if found is None:
            found = bucket[(dimension, key)] = Tally()
        return found

    @staticmethod
    def first_bucket(since_s: float, now: float) -> int:
        """The oldest minute bucket a window of ``since_s`` seconds ending ``now`` covers."""
        return int((now - min(since_s, RETENTION_S)) // BUCKET_S)

    def window(self, since_s: float, now: float | None = None) -> dict[Dimension, dict[str, Tally]]:
        """Tallies merged over the buckets of the last ``since_s`` seconds (whole minutes, the current included)."""
        now = time.time() if now is None else now
        first = self.first_bucket(since_s, now)
        merged: dict[Dimension, dict[str, Tally]] = {dimension: {} for dimension in Dimension}
        for minute, bucket in self.buckets.items():
            if minute < first:
                continue
            for (dimension, key), tally in bucket.items():
                merged[dimension].setdefault(key, Tally()).merge(tally)
        return merged

    def report(self, since_s: float, now: float | None = None) -> dict[str, Any]:
        """The window as JSON: per dimension, per key, its summary; the window's actual start (whole minutes, so
        a rate is ``count / (now - window_start)``) and the last requests answered within it."""
        now = time.time() if now is None else now
        merged = self.window(since_s, now)
        window_start = self.first_bucket(since_s, now) * BUCKET_S
        return {
            "since_s": since_s,
            "window_start": window_start,
            "recent": self.recent.since(window_start),
            "events": self.events,
            "duplicates": self.duplicates,
            **{
                dimension.value: {key: summarize(dimension, tally) for key, tally in sorted(tallies.items())}
                for dimension, tallies in merged.items()
            },
        }

    def prune(self, now: float | None = None) -> None:
        """Drop buckets and remembered event ids older than ``RETENTION_S``."""
        now = time.time() if now is None else now
        oldest = now - RETENTION_S - BUCKET_S
        for minute in [m for m in self.buckets if m * BUCKET_S < oldest]:
            del self.buckets[minute]
        for event_id in [e for e, at in self.seen.items() if at < oldest]:
            del self.seen[event_id]


def summarize(dimension: Dimension, tally: Tally) -> dict[str, Any]:
    """One row of the report; a plugin instance's row also shows its breaker transitions."""
    if dimension is Dimension.INSTANCE:
        return {**tally.summary(), **tally.breaker_summary()}
    return tally.summary()


def branch_key(route: object, split: object, branch: object) -> str:
    """Row of one split branch in the report: ``notes/auth=auth-v2``."""
    return f"{route or '?'}/{split}={branch}"


def instance_of(stage: object) -> str:
    """``"keys.request"`` -> ``"keys"``."""
    return str(stage or "?").rsplit(".", 1)[0]
