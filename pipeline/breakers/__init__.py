"""Fleet-shared circuit breakers with resilience4j's semantics: one per plugin instance, in the ``bw_breakers`` bucket.

Modules: :mod:`~backworks.pipeline.breakers.fleet` (``FleetBreakers``: admission, outcomes, CAS transitions),
:mod:`~backworks.pipeline.breakers.view` (one process's picture of one breaker; the window arithmetic) and
:mod:`~backworks.pipeline.breakers.mirror` (the KV watch in, the window writes out). Key layout and records:
:mod:`backworks.contracts.breakers`; settings: ``BreakerSettings`` in :mod:`backworks.contracts.blueprint`.

Every replica of a stage and every forwarder (the gateway, the stage before) runs one :class:`FleetBreakers`.
Each keeps a local view of the bucket fresh with a KV watch, so ``allow`` and ``state`` answer from memory.

Semantics
---------
* **A fleet-wide sliding window.** Each call's outcome (failed and/or slow: ``slow_call_duration_ms`` or longer,
  success or not, measured with the monotonic clock) goes into the window of the process that made it. Each
  process puts only its own key ``<instance>.window.<writer>`` (its last ``size`` calls, or its per-second
  tallies of the last ``size`` seconds), at most every ``mirror.WRITE_INTERVAL``: no hot key. Every process merges
  all writers' records: a count window is the fleet's newest ``size`` calls (ordered by their epoch stamps), a
  time window the calls of the last ``size`` seconds.
* **Opening.** Once the merged window holds ``minimum_calls`` calls, a failure rate >= ``failure_rate`` % or a
  slow-call rate >= ``slow_call_rate`` % opens the breaker. Whichever process first sees it (after its own call,
  or on a watched window) writes the transition.
* **Transitions are CAS writes** of ``<instance>.state`` (generation + 1), and only transitions write it: the
  others' CAS fails and they adopt the winner's state, so the fleet sees one ordered history. A new generation
  starts every window empty; an outcome counts in the generation its call was admitted in (a call admitted while
  closed that ends after the breaker opened changes nothing).
* **Half-open is derived from time**, never written: an open state carries ``reset_at`` (epoch seconds, opened +
  ``wait_in_open_ms``), from which every process sees half-open.
* **Half-open admits ``permitted_calls_in_half_open`` probes, fleet-wide.** ``call`` claims a slot key
  ``<instance>.probe.<k>`` with KV create, or CAS over a slot of an older generation or an unfinished claim whose
  lease (``max(wait_in_open, MIN_PROBE_LEASE)``) ran out, so a probe lost with its process cannot wedge the
  breaker. No free slot: :class:`~backworks.pipeline.errors.BreakerOpen`. A finished probe CAS-writes its outcome
  into its slot; once every slot of the generation has one, their failure and slow-call rates against the same
  thresholds reopen (a new ``wait_in_open_ms``) or close the breaker. ``allow`` never claims: it is true while the
  view shows a free slot; a call forwarded in the watch's propagation window is refused by the stage's ``call``.
* **The tripping call keeps its error**: ``call`` re-raises what ``fn`` raised; later calls get ``BreakerOpen``.
* **Each transition is one event** (``bw.evt.breaker.<to>``, :mod:`~backworks.pipeline.breakers.transitions`):
  published by the process whose CAS wrote it; open -> half-open, never written, by the writer of the open record
  when its clock reaches ``reset_at`` (lost if that process stopped meanwhile).
* **Time zones cannot shift anything**: stored times are ``time.time()`` epoch seconds, durations
  ``time.monotonic()``, shown as aware UTC datetimes.
* **NATS loss.** The view keeps the last known state. Window writes are retried; a transition that cannot be
  written is dropped with a warning (the next outcome or admission tries again). After a reconnect the watch is
  rebuilt from a full snapshot (:mod:`~backworks.pipeline.breakers.mirror`).

Why aiobreaker is no longer used
--------------------------------
aiobreaker 1.2 counts consecutive failures (``fail_max``) and has no sliding window, failure or slow-call rate,
minimum number of calls or bounded half-open; its timing mixes ``utcnow()`` and ``now()`` (wrong outside UTC) and
its tripping call raises ``CircuitBreakerError`` instead of the plugin's error. Every part of it was already
replaced here except its listener hook and a state-storage adapter kept only to feed that hook, so it was dropped;
:meth:`FleetBreakers.add_listener` takes a plain ``(instance, old, new)`` callable.
"""

from backworks.contracts.breakers import BreakerState
from backworks.pipeline.breakers.fleet import FleetBreakers, Listener, Transition, TransitionListener
from backworks.pipeline.breakers.mirror import BucketMirror
from backworks.pipeline.breakers.view import FleetView, Rates

__all__ = [
    "BreakerState",
    "BucketMirror",
    "FleetBreakers",
    "FleetView",
    "Listener",
    "Rates",
    "Transition",
    "TransitionListener",
]
