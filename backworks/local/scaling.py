"""``backworks scale``: changing the number of replicas of a running ``backworks up``, through its state directory.

``up`` publishes what it runs in ``<state dir>/up.json`` (its pid, and the replicas it runs per instance) and
polls ``<state dir>/scale.json`` for requests. ``backworks scale INSTANCE=N`` checks the request against
``up.json`` (an ``up`` must be running, the instances must exist, N >= 0), writes ``scale.json`` and waits until
``up.json`` shows the new counts. ``up`` starts replicas at once and stops the ones no longer wanted with SIGTERM:
each drains (finishes what it took, and what the broker still sends it) before it exits.

No broker privilege is involved: whoever may write the state directory (its owner: files are 0600) may scale, as
they may stop ``up`` itself. A NATS control subject would need an identity allowed to command ``up``, one more
credential to keep.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from backworks.local.errors import LocalError

if TYPE_CHECKING:
    from backworks.local.supervisor import Supervisor

STATUS_FILE = "up.json"
REQUEST_FILE = "scale.json"
APPLY_TIMEOUT = 30.0
"""Seconds ``backworks scale`` waits for ``up`` to take its request."""
POLL = 0.1


class ScaleError(LocalError):
    """A ``backworks scale`` request that cannot be carried out: no ``up`` running, an unknown instance, N < 0."""


@dataclass(frozen=True)
class UpStatus:
    """What a running ``up`` publishes: who it is and how many replicas of each instance it runs."""

    pid: int
    replicas: dict[str, int]
    request: int = 0
    """The last scale request (``scale.json`` modification time, ns) it applied."""


def write_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` readable by its owner only, never half-written for a reader."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


def publish(state: Path, replicas: dict[str, int], request: int = 0) -> None:
    """``up``: record what runs now."""
    write_atomically(state / STATUS_FILE, {"pid": os.getpid(), "replicas": replicas, "request": request})


def withdraw(state: Path) -> None:
    """``up``, stopping: nothing runs any more."""
    for name in (STATUS_FILE, REQUEST_FILE):
        (state / name).unlink(missing_ok=True)


def running(state: Path) -> UpStatus:
    """The ``up`` running for this state directory; raises ``ScaleError`` when there is none."""
    try:
        found = json.loads((state / STATUS_FILE).read_text())
        status = UpStatus(int(found["pid"]), {k: int(v) for k, v in found["replicas"].items()}, int(found["request"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ScaleError(
            f"no `backworks up` is running for the state directory {state}: start one, or pass the --state-dir "
            "it runs with"
        ) from None
    if not _alive(status.pid):
        raise ScaleError(f"the `backworks up` recorded in {state / STATUS_FILE} (pid {status.pid}) is not running")
    return status


def parse(values: list[str], known: dict[str, int]) -> dict[str, int]:
    """``INSTANCE=N`` arguments, checked against the instances ``up`` runs."""
    counts: dict[str, int] = {}
    for value in values:
        name, equals, number = value.partition("=")
        if not equals or not number.lstrip("-").isdigit():
            raise ScaleError(f"expected INSTANCE=N, got {value!r} (e.g. `backworks scale secure=3`)")
        if name not in known:
            raise ScaleError(f"unknown instance {name!r}; `backworks up` runs: {', '.join(sorted(known))}")
        if int(number) < 0:
            raise ScaleError(f"{value!r}: the number of replicas must be 0 or more")
        counts[name] = int(number)
    if not counts:
        raise ScaleError("nothing to scale: give INSTANCE=N (e.g. `backworks scale secure=3`)")
    return counts


def request(state: Path, values: list[str], timeout: float = APPLY_TIMEOUT) -> dict[str, int]:
    """Ask the running ``up`` for the replica counts in ``values``; returns every instance's count once applied."""
    status = running(state)
    counts = parse(values, status.replicas)
    path = state / REQUEST_FILE
    write_atomically(path, counts)
    stamp = path.stat().st_mtime_ns
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        status = running(state)
        if status.request >= stamp and all(status.replicas.get(k) == v for k, v in counts.items()):
            return status.replicas
        time.sleep(POLL)
    raise ScaleError(f"`backworks up` (pid {status.pid}) did not apply the request within {timeout:.0f} s")


class Requests:
    """``up``'s side: notices a new ``scale.json`` (one ``stat`` per poll) and reads it."""

    def __init__(self, state: Path) -> None:
        self.path = state / REQUEST_FILE
        self.seen = 0

    def new(self) -> tuple[int, dict[str, int]] | None:
        """The request written since the last call (its stamp and counts), or None."""
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if stamp <= self.seen:
            return None
        self.seen = stamp
        try:
            counts = json.loads(self.path.read_text())
            return stamp, {str(k): int(v) for k, v in counts.items()}
        except (OSError, ValueError, AttributeError):
            return None  # written by hand and unreadable: `backworks scale` never writes that


def listen(state: Path, supervisor: Supervisor) -> Callable[[], None]:
    """``up``'s side, set up: publish what runs, forget any request left from an earlier run, and return the tick
    that applies new requests (``Supervisor.run`` calls it every round)."""
    (state / REQUEST_FILE).unlink(missing_ok=True)
    publish(state, supervisor.replica_counts())
    requests = Requests(state)

    def tick() -> None:
        found = requests.new()
        if found is None:
            return
        stamp, counts = found
        known = supervisor.replica_counts()
        for name, count in counts.items():
            if name in known and count >= 0:  # `backworks scale` checked both; a hand-written file may not
                supervisor.set_replicas(name, count)
        publish(state, supervisor.replica_counts(), stamp)

    return tick


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
