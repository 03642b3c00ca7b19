"""Breaker transitions onto the event stream: each one once, fleet-wide, as a ``BreakerTransition`` event.

The replica that wrote a transition (see ``FleetBreakers.on_transition``) emits it through its process's event
publisher, which never blocks nor fails the call that tripped the breaker; a lost event is counted there.
"""

from __future__ import annotations

from backworks.contracts.events import BreakerTransition
from backworks.contracts.names import breaker_event_subject
from backworks.pipeline.breakers.fleet import FleetBreakers, Transition
from backworks.pipeline.events import EventPublisher


def publish_transitions(breakers: FleetBreakers, events: EventPublisher) -> None:
    """Emit every transition ``breakers`` writes as a ``bw.evt.breaker.<to-state>`` event on ``events``."""

    def emit(transition: Transition) -> None:
        event = BreakerTransition(
            instance=transition.instance,
            from_state=transition.old,
            to_state=transition.new,
            generation=transition.generation,
            reason=transition.reason,
            replica=breakers.replica,
            reset_at=transition.reset_at,
            at=transition.at,
        )
        events.emit(breaker_event_subject(transition.new.value), event)

    breakers.on_transition(emit)
