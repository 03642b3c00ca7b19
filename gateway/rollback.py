"""Automatic rollback of canary splits, decided by the gateway and held fleet-wide in the ``bw_splits`` bucket.

Why the gateway and not the analytics service: the gateway sees every response of its requests first-hand
(status, latency, the branches taken), whether or not per-request events are on and whether or not an analytics
service runs; a rollback must not depend on an optional service. Each gateway replica judges the responses it
served (with several replicas, each a random share of the traffic) and the first to find a branch worse
writes the record; every replica watches the bucket, so all of them, and a restarted one, send the split to its
baseline from then on. The record names the split's fingerprint: when the blueprint's split changes, the old
record no longer holds. ``backworks split reset`` deletes it.

The judge: over the last ``window_s`` seconds, once the baseline and a branch each have ``min_calls``
responses, the branch is worse when its 5xx rate exceeds the baseline's by more than ``max_error_rate_increase``
percentage points, or its p99 latency the baseline's by more than ``max_p99_increase_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from backworks.contracts.events import AlertEvent, AlertState
from backworks.contracts.names import SPLITS_BUCKET, alert_subject
from backworks.contracts.splits import RolledBack, Split, SplitRollback, rollback_key
from backworks.pipeline import kvwatch
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.gateway.rollback")

JUDGE_INTERVAL_S = 0.25
"""Seconds between two judgements of one split (a response between them is recorded, not judged)."""
MAX_SAMPLES = 100_000
"""Responses kept per branch and window at most (older ones go first)."""
READY_TIMEOUT_S = 5.0
"""Seconds the gateway waits at start for the rollbacks already recorded."""
RETRY_DELAY_S = 1.0
STORE_ATTEMPTS = 5
ALERT_RULE = "split-rollback"
"""The ``rule`` of the alert event a rollback publishes."""
ERROR_STATUS = 500


@dataclass
class Outcomes:
    """One branch's recent responses: (monotonic time, failed, milliseconds)."""

    samples: deque[tuple[float, bool, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def prune(self, since: float) -> None:
        while self.samples and self.samples[0][0] < since:
            self.samples.popleft()

    def error_rate(self) -> float:
        """Failed share in percent."""
        return 100 * sum(1 for _, failed, _ in self.samples if failed) / len(self.samples)

    def p99(self) -> float:
        ordered = sorted(ms for _, _, ms in self.samples)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def judge(rule: SplitRollback, baseline: Outcomes, branch: Outcomes) -> tuple[str, dict[str, float]] | None:
    """Why ``branch`` is worse than ``baseline`` past the rule's margins, with the measures; None if it is not."""
    if len(baseline.samples) < rule.min_calls or len(branch.samples) < rule.min_calls:
        return None
    measured = {"baseline_calls": float(len(baseline.samples)), "branch_calls": float(len(branch.samples))}
    reasons: list[str] = []
    if rule.max_error_rate_increase is not None:
        old, new = baseline.error_rate(), branch.error_rate()
        measured |= {"baseline_error_rate": round(old, 3), "branch_error_rate": round(new, 3)}
        if new - old > rule.max_error_rate_increase:
            reasons.append(f"5xx rate {new:.1f} % vs {old:.1f} % (margin {rule.max_error_rate_increase:g} points)")
    if rule.max_p99_increase_ms is not None:
        old_p99, new_p99 = baseline.p99(), branch.p99()
        measured |= {"baseline_p99_ms": round(old_p99, 3), "branch_p99_ms": round(new_p99, 3)}
        if new_p99 - old_p99 > rule.max_p99_increase_ms:
            reasons.append(f"p99 {new_p99:.1f} ms vs {old_p99:.1f} ms (margin {rule.max_p99_increase_ms:g} ms)")
    return ("; ".join(reasons), measured) if reasons else None


def fingerprint_of(value: bytes | None) -> str | None:
    try:
        return RolledBack.model_validate_json(value or b"").fingerprint
    except ValidationError:
        return None


class SplitRollbacks:
    """One gateway's view of the rolled-back splits (watched from KV), and its judge of the splits with a rule."""

    def __init__(self, gateway_id: str, events: EventPublisher | None = None) -> None:
        self.gateway_id = gateway_id
        self.events = events
        self.records: dict[tuple[str, str], RolledBack] = {}
        """Rollbacks recorded in the bucket (or decided here and being written), by (endpoint, split)."""
        self.windows: dict[tuple[str, str, str], Outcomes] = {}
        self.judged_at: dict[tuple[str, str], float] = {}
        self.ready = asyncio.Event()
        self._kv: KeyValue | None = None
        self._watch: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    @staticmethod
    def needed(loaded: LoadedBlueprint) -> bool:
        """Whether ``loaded`` has a split (a rollback record can hold any split, with a rule or not)."""
        return any(loaded.model.splits(endpoint) for endpoint in loaded.model.endpoints)

    async def start(self, client: Client, js: JetStreamContext) -> None:
        """Watch the bucket; wait (a bounded time) for the rollbacks already recorded."""
        self._watch = asyncio.create_task(self._watch_forever(client, js))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT_S)
        if not self.ready.is_set():
            log.warning("canary rollbacks not loaded yet; splits run as declared meanwhile", bucket=SPLITS_BUCKET)

    async def stop(self) -> None:
        await cancel([task for task in (self._watch, *self._writes) if task is not None])

    def held(self, endpoint: str, name: str, split: Split) -> str | None:
        """The baseline when a rollback of this very split holds, else None."""
        record = self.records.get((endpoint, name))
        if record is None or record.fingerprint != split.fingerprint():
            return None
        return split.baseline

    def observe(self, endpoint: str, splits: Mapping[str, Split], picks: Mapping[str, str], status: int,
                ms: float) -> None:  # fmt: skip
        """Record one response of a request that took ``picks`` at ``splits`` (the splits of the blueprint revision
        it was served by); judge them now and then."""
        now = time.monotonic()
        for name, branch in picks.items():
            split = splits.get(name)
            if split is None or split.rollback is None or self.held(endpoint, name, split) is not None:
                continue
            self.windows.setdefault((endpoint, name, branch), Outcomes()).samples.append(
                (now, status >= ERROR_STATUS, ms)
            )
            if now - self.judged_at.get((endpoint, name), -math.inf) >= JUDGE_INTERVAL_S:
                self.judged_at[(endpoint, name)] = now
                self._judge(endpoint, name, split, split.rollback, now)

    def _judge(self, endpoint: str, name: str, split: Split, rule: SplitRollback, now: float) -> None:
        since = now - rule.window_s
        baseline = self.windows.setdefault((endpoint, name, split.baseline), Outcomes())
        baseline.prune(since)
        for branch in split.split:
            if branch == split.baseline:
                continue
            outcomes = self.windows.setdefault((endpoint, name, branch), Outcomes())
            outcomes.prune(since)
            verdict = judge(rule, baseline, outcomes)
            if verdict is not None:
                self._roll_back(endpoint, name, split, branch, *verdict, window_s=rule.window_s)
                return

    def _roll_back(
        self, endpoint: str, name: str, split: Split, branch: str, why: str, measured: dict[str, float], window_s: float
    ) -> None:
        reason = f"branch {branch} worse than baseline {split.baseline} over {window_s:g} s: {why}"
        record = RolledBack(endpoint=endpoint, split=name, baseline=split.baseline, branch=branch,
                            fingerprint=split.fingerprint(), reason=reason, measured=measured,
                            gateway=self.gateway_id)  # fmt: skip
        self.records[(endpoint, name)] = record  # this gateway holds it at once; the bucket tells the others
        for key in [key for key in self.windows if key[:2] == (endpoint, name)]:
            del self.windows[key]
        log.warning("canary split rolled back to its baseline", endpoint=endpoint, split=name,
                    baseline=split.baseline, branch=branch, reason=reason, **measured)  # fmt: skip
        if self.events is not None:
            alert = AlertEvent(rule=ALERT_RULE, state=AlertState.FIRING, condition=f"split {endpoint}/{name}: {reason}",
                               value=measured.get("branch_error_rate"), subject=f"{endpoint}/{name}")  # fmt: skip
            self.events.emit(alert_subject(AlertState.FIRING.value), alert.model_dump(mode="json"))
        task = asyncio.get_running_loop().create_task(self._store(record))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _store(self, record: RolledBack) -> None:
        """Create the record; one already there for this split stays (another gateway was first)."""
        key = rollback_key(record.endpoint, record.split)
        data = record.model_dump_json().encode()
        for _ in range(STORE_ATTEMPTS):
            try:
                if self._kv is None:
                    raise RuntimeError(f"KV bucket {SPLITS_BUCKET} not open yet")
                try:
                    await self._kv.create(key, data)
                except KeyWrongLastSequenceError:
                    entry = await self._kv.get(key)
                    if fingerprint_of(entry.value) != record.fingerprint:  # left by an earlier split: replace it
                        await self._kv.update(key, data, last=entry.revision)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not store a canary rollback; retrying", key=key, error=repr(exc))
                await asyncio.sleep(RETRY_DELAY_S)
        log.error("canary rollback not stored: only this gateway holds it", key=key, bucket=SPLITS_BUCKET)

    async def _watch_forever(self, client: Client, js: JetStreamContext) -> None:
        def found(kv: KeyValue) -> None:
            self._kv = kv

        await kvwatch.follow(
            client, js, SPLITS_BUCKET, self._apply, what="canary rollback", on_ready=self.ready.set, on_bucket=found
        )

    def _apply(self, entry: KeyValue.Entry) -> None:
        endpoint, _, name = entry.key.partition(".")
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            if self.records.pop((endpoint, name), None) is not None:
                log.info("canary split reset: back to its weights", endpoint=endpoint, split=name)
            return
        try:
            record = RolledBack.model_validate_json(entry.value)
        except ValidationError:
            log.warning("unreadable canary rollback ignored", key=entry.key)
            return
        self.records[(endpoint, name)] = record
