"""Fleet-shared circuit breakers: one per plugin instance, kept in the ``bw_breakers`` KV bucket.

Modules: :mod:`~backworks.pipeline.breakers.fleet` (``FleetBreakers``: admission, counting, CAS transitions),
:mod:`~backworks.pipeline.breakers.view` (one process's in-memory picture of one breaker),
:mod:`~backworks.pipeline.breakers.storage` (aiobreaker's storage and listener over that picture) and
:mod:`~backworks.pipeline.breakers.mirror` (the KV watch in, the count writes out).

Every replica of a stage and every forwarder (the gateway, the stage before) runs one :class:`FleetBreakers`.
Each keeps a local view of the bucket fresh with a KV watch, so ``allow`` and ``state`` answer from memory
without blocking; counts and transitions are written to KV (key layout: :mod:`backworks.contracts.breakers`).

Semantics
---------
* **Consecutive failures across the fleet.** A breaker opens once ``failure_threshold`` failures have been
  recorded, by any processes, with no success recorded anywhere after them: a success on any replica resets the
  streak for all. Not a sliding window: the blueprint documents the threshold as consecutive failures, has no
  window setting, and a streak needs no agreement between clocks.
* **No hot key for counting.** Each process (writer) puts only its own key ``<instance>.count.<writer>``: its
  failure total in the current generation (it only grows) and ``resets``, the totals of every writer it had seen
  when it last recorded a success. The streak is ``sum over writers w of max(0, failures[w] - max resets[w])``.
  A writer writes when a failure happens or a success ends a non-zero streak (a healthy hot path writes
  nothing), in the background, one put in flight per process, always with its latest numbers.
  Approximation: a failure and a success recorded at the same moment on two processes (within the watch
  propagation, well under a millisecond on loopback) can be ordered differently than in real time; the failure
  then still counts.
* **Transitions are CAS writes** of ``<instance>.state`` (generation + 1), and only transitions write it.
  Whichever process first sees the streak reach the threshold opens the breaker; the others' CAS fails and they
  adopt the winner's state, so concurrent failures open it exactly once and every process sees the same ordered
  history. A new generation starts every count at zero. A result counts against the generation its call was
  admitted in: a call admitted while closed that fails after the breaker opened changes nothing.
* **Half-open is derived from time**, never written: an open state carries ``reset_at`` (epoch seconds), from
  which every process sees half-open.
* **Half-open admits ``half_open_probes`` probes, fleet-wide.** ``call`` claims a slot key
  ``<instance>.probe.<k>`` with KV create, or CAS over a slot of an older generation or whose lease
  (``max(reset timeout, MIN_PROBE_LEASE)``) ran out, so a probe lost with its process cannot wedge the breaker.
  No free slot: :class:`~backworks.pipeline.errors.BreakerOpen`. The first probe result decides: success closes, failure
  reopens for a new reset timeout; later results of that generation are ignored. ``allow`` never claims: it is
  true while the view shows a free slot, and a claim reaches every forwarder within the watch propagation; a
  call forwarded in that window is refused by the stage host's ``call``.
* **``record_success``/``record_failure``** (no admission) count only while closed; while open or half-open only
  admitted probes decide.
* **NATS loss.** The view keeps the last known state. Count writes are retried; a transition that cannot be
  written is dropped with a warning (the next failure or probe tries again). After a reconnect the watch is rebuilt
  from a full snapshot (:mod:`~backworks.pipeline.breakers.mirror`).

aiobreaker: what is used, what is replaced
------------------------------------------
Used: one ``aiobreaker.CircuitBreaker`` per instance as the state machine listeners hang on: its ``state``
property notices a state change in its storage (the view, changed by the watch or a timer at ``reset_at``) and
calls every ``CircuitBreakerListener.state_change`` (a structlog listener here, more via ``add_listener``); and
aiobreaker's synchronous storage interface, implemented by
:class:`~backworks.pipeline.breakers.storage.FleetStorage` over the local view, with write-through in background
tasks.

Replaced, and why:

* ``CircuitBreaker.call_async`` and its state classes' call path, by :meth:`FleetBreakers.call`: the tripping
  call raised ``CircuitBreakerError`` instead of the original error, half-open let every concurrent call through,
  and counting was per process.
* ``CircuitBreaker.open()``, ``opens_at``, ``time_until_open`` and ``CircuitBreakerError.time_remaining``: they
  stamp ``datetime.utcnow()`` (deprecated, warns from Python 3.12) and compare it with naive local
  ``datetime.now()``, which is off by the UTC offset (9 h in Tokyo). Here every time is ``time.time()`` epoch
  seconds, shown as aware UTC datetimes; none of those aiobreaker methods is called, and the storage refuses
  direct transitions.
"""

from backworks.contracts.breakers import BreakerState
from backworks.pipeline.breakers.fleet import FleetBreakers
from backworks.pipeline.breakers.mirror import BucketMirror
from backworks.pipeline.breakers.storage import FleetStorage, LogListener
from backworks.pipeline.breakers.view import FleetView

__all__ = ["BreakerState", "BucketMirror", "FleetBreakers", "FleetStorage", "FleetView", "LogListener"]
