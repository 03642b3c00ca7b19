"""The shadow-replay diff: one recorded response against its replayed twin, and the report over a whole replay.

Pure: ``Observed`` responses in, ``Compared`` requests and a ``DiffReport`` out (``backworks replay`` prints it).
A response differs in its status, in any header not ignored (names compared case-insensitively, every value in
order, credentials masked on both sides first), or in its body (the whole body's SHA-256: a recording keeps a
bounded prefix and the digest). JSON bodies name the JSON pointers that differ.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from backworks.contracts.types import Headers
from backworks.pipeline import credentials

IGNORED_HEADERS = frozenset({"server-timing", "traceresponse", "date", "x-backworks-revision"})
"""Headers that differ by design (timings, the trace's span, the clock, the blueprint revision that served it — a
replay runs outside the fleet's revisions): not a difference."""
MAX_POINTERS = 5
"""JSON pointers named per differing body."""
EXCERPT_CHARS = 80
PERCENTILES = (50, 95, 99)


class Outcome(str, Enum):
    """What the replay of one recorded request showed."""

    SAME = "same"
    """Status, headers and body as the client got them."""
    DIFFERS = "differs"
    """The replay answered differently (see its differences)."""
    ERROR = "error"
    """The request could not be replayed (no credentials to restore, an endpoint that does not run the stage...)."""


@dataclass(frozen=True)
class Observed:
    """A response as compared: the recorded one or the replayed one."""

    status: int
    headers: Headers
    body: bytes
    """The body, or its recorded prefix (``body_sha256`` covers the whole body)."""
    body_sha256: str
    total_ms: float
    stage_ms: float | None = None
    """Time spent in the replaced stage (live: from ``server-timing``), when known."""

    @classmethod
    def of(cls, status: int, headers: Headers, body: bytes, total_ms: float, stage_ms: float | None = None) -> Observed:
        return cls(status, headers, body, hashlib.sha256(body).hexdigest(), total_ms, stage_ms)


@dataclass
class Compared:
    """One replayed request: its outcome and, when it differs, where."""

    request_id: str
    method: str
    path: str
    outcome: Outcome
    status: tuple[int, int] | None = None
    headers: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    """Header name -> (recorded values, replayed values), for the headers that differ."""
    body: dict[str, Any] | None = None
    """When the bodies differ: digests, and the JSON pointers or a text excerpt where they part."""
    error: str | None = None

    @property
    def kinds(self) -> list[str]:
        """What differs: ``status``, ``header <name>``, ``body``."""
        found = ["status"] if self.status else []
        found += [f"header {name}" for name in self.headers]
        return [*found, "body"] if self.body else found

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request_id": self.request_id, "method": self.method, "path": self.path,
                                "outcome": self.outcome.value}  # fmt: skip
        if self.status:
            data["status"] = {"recorded": self.status[0], "replayed": self.status[1]}
        if self.headers:
            data["headers"] = {name: {"recorded": old, "replayed": new} for name, (old, new) in self.headers.items()}
        if self.body:
            data["body"] = self.body
        if self.error:
            data["error"] = self.error
        return data


def grouped(headers: Headers, ignored: frozenset[str]) -> dict[str, list[str]]:
    """Header values by lower-case name, in order, credentials masked, ``ignored`` names left out."""
    found: dict[str, list[str]] = {}
    for name, value in credentials.redact_headers(headers):
        low = name.lower()
        if low not in ignored:
            found.setdefault(low, []).append(value)
    return found


def json_pointers(old: Any, new: Any, at: str = "") -> Iterable[str]:
    """JSON pointers (RFC 6901) where two JSON values differ, depth first."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            token = str(key).replace("~", "~0").replace("/", "~1")
            if key not in old or key not in new:
                yield f"{at}/{token}"
            else:
                yield from json_pointers(old[key], new[key], f"{at}/{token}")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from json_pointers(a, b, f"{at}/{index}")
    elif old != new or type(old) is not type(new):
        yield at or "/"


def body_difference(old: Observed, new: Observed) -> dict[str, Any] | None:
    """None when the bodies are the same; else their digests and where they part."""
    if old.body_sha256 == new.body_sha256:
        return None
    found: dict[str, Any] = {"recorded_sha256": old.body_sha256, "replayed_sha256": new.body_sha256}
    try:
        pointers = list(json_pointers(json.loads(old.body), json.loads(new.body)))
    except ValueError:  # not JSON (or a cut prefix): where the texts part
        a, b = old.body.decode("utf-8", "replace"), new.body.decode("utf-8", "replace")
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        start = max(0, at - EXCERPT_CHARS // 4)
        found.update(at=at, recorded=a[start : start + EXCERPT_CHARS], replayed=b[start : start + EXCERPT_CHARS])
    else:
        found["pointers"] = pointers[:MAX_POINTERS]
    return found


def compare(
    request_id: str, method: str, path: str, old: Observed, new: Observed, ignored: frozenset[str] = IGNORED_HEADERS
) -> Compared:
    """How the replayed response ``new`` differs from the recorded ``old``."""
    status = (old.status, new.status) if old.status != new.status else None
    before, after = grouped(old.headers, ignored), grouped(new.headers, ignored)
    headers = {
        name: (before.get(name, []), after.get(name, []))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }
    body = body_difference(old, new)
    outcome = Outcome.DIFFERS if status or headers or body else Outcome.SAME
    return Compared(request_id, method, path, outcome, status, headers, body)


def percentile(values: Sequence[float], fraction: float) -> float:
    from backworks.sdk.profiler import percentile as quantile  # the project's one percentile implementation

    return quantile(values, fraction)


def distribution(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {f"p{p}": round(percentile(values, p / 100), 3) for p in PERCENTILES}


@dataclass
class DiffReport:
    """Every replayed request of one replay, and what they add up to."""

    endpoint: str
    session: str
    against: str
    replacing: str
    compared: list[Compared] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)
    """Series of milliseconds: ``recorded_total``, ``replayed_total``, ``recorded_stage``, ``replayed_stage``."""

    def add(self, compared: Compared, old: Observed | None = None, new: Observed | None = None) -> None:
        self.compared.append(compared)
        if old is None or new is None:
            return
        for name, value in (("recorded_total", old.total_ms), ("replayed_total", new.total_ms),
                            ("recorded_stage", old.stage_ms), ("replayed_stage", new.stage_ms)):  # fmt: skip
            if value is not None:
                self.latency.setdefault(name, []).append(value)

    def counts(self) -> dict[str, int]:
        found = Counter(item.outcome.value for item in self.compared)
        return {"replayed": len(self.compared), **{o.value: found.get(o.value, 0) for o in Outcome}}

    def differences(self) -> dict[str, int]:
        """How many requests differ in each way (``status``, ``header <name>``, ``body``), most frequent first."""
        found = Counter(kind for item in self.compared for kind in item.kinds)
        return dict(found.most_common())

    def errors(self) -> dict[str, int]:
        return dict(Counter(item.error for item in self.compared if item.error).most_common())

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "session": self.session,
            "against": self.against,
            "replacing": self.replacing,
            "counts": self.counts(),
            "differences": self.differences(),
            "errors": self.errors(),
            "latency_ms": {name: distribution(values) for name, values in sorted(self.latency.items())},
            "requests": [item.as_dict() for item in self.compared if item.outcome is not Outcome.SAME],
        }

    def example(self, kind: str) -> str:
        """One request's difference of ``kind``, briefly, for the text report."""
        for item in self.compared:
            if kind == "status" and item.status:
                return f"{item.status[0]} -> {item.status[1]}"
            if kind.startswith("header ") and (pair := item.headers.get(kind[7:])):
                return f"{', '.join(pair[0]) or '(absent)'} -> {', '.join(pair[1]) or '(absent)'}"
            if kind == "body" and item.body:
                where = item.body.get("pointers") or [f"at char {item.body.get('at')}"]
                return ", ".join(where)
        return ""
