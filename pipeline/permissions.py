"""Who may do what on the broker: every service's NATS identity and least-privilege permissions, from the blueprint.

Pure: a ``LoadedBlueprint`` in, the identities out; the embedded server's configuration, ``backworks nats
permissions`` and ``backworks declare`` all print or apply what :func:`identities` returns.

Identities:

* ``admin`` (the declaring component and the CLI's dlq/plugins/status commands): everything;
* ``gateway``: publishes the first hop of every endpoint (the first stage, and those reached by skipping optional
  stages, as ``pipeline.gate`` does; every branch of a split); subscribes to the gateway reply inboxes
  ``_INBOX.bw.<gateway>.<id>``; watches the recording switches (``bw_record``) and publishes recorded requests to
  ``BW_RECORD``, which only admin reads; reads and writes the canary rollbacks in ``bw_splits``;
* ``stage-<instance>`` (every replica of one plugin instance): pulls from its own durables only, publishes to the
  stages that can follow it in some itinerary, writes only its own registry and breaker keys;
* ``group-<group>`` (every replica of a co-location group, ``colocate: <group>``): what each member's stage
  identity may do, except publishing to the group's own stage subjects (the group hands those on in memory);
* ``tap`` (``audit serve``, ``analytics serve``, ``report``, ``top``): its own consumers of the event stream, the
  alert events analytics raises, the registry (who is live), the DLQ's size, and the report request/reply.

Every identity has a private inbox prefix (``_BW_INBOX.<identity>``, nats-py's ``inbox_prefix``): JetStream's
answers come back there, and no other identity may subscribe to it.

Who may end a request (publish to a gateway reply inbox): every forwarder may. A stage host's forwarder ends the
itinerary when the next critical stage has no live replica or an open breaker (503), a critical stage that fails
ends it, and a dead letter is answered by whichever forwarder handles the advisory; :func:`next_hops` computes this
per position. What keeps a stage from forging answers to requests it never saw is that only the gateway may
subscribe to the inboxes, so the correlation ids of other requests are unknown to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from backworks.contracts.envelope import Stage
from backworks.contracts.names import (
    BREAKERS_BUCKET,
    CONFIG_BUCKET,
    CONFIG_PROBE_SUBJECT,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    FENCE_SUBJECT,
    INBOX_PREFIX,
    PIPELINE_STREAM,
    PLUGIN_BUCKETS,
    RECORD_BUCKET,
    RECORD_SUBJECTS,
    REGISTRY_BUCKET,
    REPLY_RESEND_SUBJECT,
    REPORT_SUBJECT,
    SPLITS_BUCKET,
    Phase,
    alert_subject,
    identity_inbox,
    max_deliveries_advisory,
    pull_request_subject,
    stage_durable,
    stage_subject,
)
from backworks.pipeline.blueprints import LoadedBlueprint

ADMIN = "admin"
GATEWAY = "gateway"
TAP = "tap"
STAGE_PREFIX = "stage-"
GROUP_PREFIX = "group-"
JS_API = "$JS.API"
REPLY_SUBJECTS = f"{INBOX_PREFIX}.*.*"
"""Every gateway reply subject ``_INBOX.bw.<gateway>.<correlation>``."""


class Role(str, Enum):
    """What a service is, which decides the shape of its permissions."""

    ADMIN = "admin"
    """Declares streams and buckets; the CLI's read and replay commands."""
    GATEWAY = "gateway"
    """The HTTP edge: first hops and reply inboxes."""
    STAGE = "stage"
    """The replicas of one plugin instance."""
    GROUP = "group"
    """The replicas of one co-location group: several plugin instances in one process."""
    TAP = "tap"
    """A reader of the event stream (audit, analytics)."""


@dataclass(frozen=True)
class Permissions:
    """Subjects an identity may publish to and subscribe to (NATS wildcards); anything else is refused."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False
    """May answer requests it received (nats-server's ``allow_responses``: only their reply subjects, only once)."""

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"publish": list(self.publish), "subscribe": list(self.subscribe)}
        if self.responses:
            found["allow_responses"] = True
        return found


@dataclass(frozen=True)
class Identity:
    """One service's NATS user: its name, role and permissions."""

    name: str
    role: Role
    permissions: Permissions
    instance: str | None = None
    """The plugin instance of a stage identity."""

    @property
    def inbox_prefix(self) -> str:
        return identity_inbox(self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.name,
            "role": self.role.value,
            "inbox_prefix": self.inbox_prefix,
            **self.permissions.as_dict(),
        }


@dataclass(frozen=True)
class Hops:
    """Where a forwarder may send an envelope next: stage positions of the itinerary, and/or the reply inbox."""

    stages: frozenset[int] = field(default_factory=frozenset)
    ends: bool = False


def subject_durable(subject: str) -> str:
    """The durable consuming a stage subject ``bw.stage.<instance>.<phase>``."""
    _, _, instance, phase = subject.split(".", 3)
    return stage_durable(instance, Phase(phase))


def stage_identity(instance: str) -> str:
    """The identity every replica of ``instance`` connects as."""
    return f"{STAGE_PREFIX}{instance}"


def group_identity(group: str) -> str:
    """The identity every replica of co-location group ``group`` connects as."""
    return f"{GROUP_PREFIX}{group}"


def reachable(itinerary: list[Stage], cursor: int) -> Hops:
    """What a forwarder may publish to with the envelope's cursor at ``cursor`` (``gate.advance``'s semantics).

    Each stage from the cursor on may be the target while every stage before it was optional (unavailable optional
    stages are skipped); an unavailable critical stage ends the request, and so does running out of stages.
    """
    targets: set[int] = set()
    for position in range(cursor, len(itinerary)):
        targets.add(position)
        if itinerary[position].critical:
            break
    return Hops(frozenset(targets), ends=True)


def next_hops(itinerary: list[Stage], position: int) -> Hops:
    """What the stage at ``position`` may publish to once its hook ran (``executor.execute``'s outcomes).

    Success or a skipped failure moves to ``position + 1``; a request-phase answer (``Respond``) jumps to the first
    response stage; a critical failure ends the request, and any forwarder may end one it dead-letters.
    """
    stages = set(reachable(itinerary, position + 1).stages)
    if itinerary[position].phase is Phase.REQUEST:
        stages |= reachable(itinerary, max(position + 1, first_response(itinerary))).stages
    return Hops(frozenset(stages), ends=True)


def first_response(itinerary: list[Stage]) -> int:
    for index, stage in enumerate(itinerary):
        if stage.phase is Phase.RESPONSE:
            return index
    return len(itinerary)


def _subjects(itinerary: list[Stage], positions: Iterable[int]) -> set[str]:
    return {stage_subject(itinerary[p].instance, itinerary[p].phase) for p in positions}


def kv_api(bucket: str) -> list[str]:
    """Reading and watching one KV bucket: bind (stream info), direct gets, the watch's ordered consumer."""
    stream = f"KV_{bucket}"
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def forwarder_publish() -> list[str]:
    """What every forwarder (gateway, stage host) needs besides its stage subjects: the watches it keeps (registry,
    breakers), the dead letters it may handle, the events it records and the replies it may send."""
    return [
        f"{JS_API}.STREAM.INFO.{PIPELINE_STREAM}",
        *kv_api(REGISTRY_BUCKET),
        *kv_api(BREAKERS_BUCKET),
        # Blueprint revisions: every service reads and watches them (only admin writes), and answers the probe
        # ``backworks apply`` (always the admin identity) sends to its inbox.
        *kv_api(CONFIG_BUCKET),
        f"{identity_inbox(ADMIN)}.>",
        # Dead letters (DeadLetterWatch): read the exhausted message, store it in BW_DLQ, delete it, answer.
        f"{JS_API}.STREAM.MSG.GET.{PIPELINE_STREAM}",
        f"{JS_API}.STREAM.MSG.DELETE.{PIPELINE_STREAM}",
        FENCE_SUBJECT,  # whether a request went on before it is buried
        DLQ_SUBJECTS,
        EVENTS_SUBJECTS,
        REPLY_SUBJECTS,
    ]


def forwarder_subscribe(name: str) -> list[str]:
    # REPLY_RESEND_SUBJECT: a gateway that reconnected asks every forwarder for its recent replies again.
    return [
        f"{identity_inbox(name)}.>",
        max_deliveries_advisory(PIPELINE_STREAM),
        CONFIG_PROBE_SUBJECT,
        REPLY_RESEND_SUBJECT,
    ]


def gateway(loaded: LoadedBlueprint) -> Identity:
    first: set[str] = set()
    durables: set[str] = set()
    for endpoint in loaded.model.endpoints:
        for _, itinerary in loaded.itineraries(endpoint):  # every branch of a split may be the first hop
            first |= _subjects(itinerary, reachable(itinerary, 0).stages)
            durables |= {stage_durable(stage.instance, stage.phase) for stage in itinerary}
    # The stall probe on the timeout path reads the consumer info of every stage of the itinerary.
    probes = [f"{JS_API}.CONSUMER.INFO.{PIPELINE_STREAM}.{durable}" for durable in sorted(durables)]
    # The analytics service's report (``/_backworks/report``) and the DLQ size in its metrics.
    tap = [REPORT_SUBJECT, f"{JS_API}.STREAM.INFO.{DLQ_STREAM}"]
    # Recording (``backworks record``): it watches the switches and stores sampled requests; it cannot read them.
    recording = [*kv_api(RECORD_BUCKET), RECORD_SUBJECTS]
    # Canary splits rolled back (``gateway.rollback``): the gateways alone read and write them, when there are splits.
    has_splits = any(loaded.model.splits(endpoint) for endpoint in loaded.model.endpoints)
    rollbacks = [*kv_api(SPLITS_BUCKET), f"$KV.{SPLITS_BUCKET}.>"] if has_splits else []
    # After a reconnect it asks the forwarders for the replies it may have missed meanwhile (pipeline.replycache).
    resend = [REPLY_RESEND_SUBJECT]
    publish = [*sorted(first), *probes, *tap, *recording, *rollbacks, *resend, *forwarder_publish()]
    subscribe = [REPLY_SUBJECTS, *forwarder_subscribe(GATEWAY)]
    return Identity(GATEWAY, Role.GATEWAY, Permissions(tuple(publish), tuple(subscribe)))


def stage(loaded: LoadedBlueprint, instance: str) -> Identity:
    name = stage_identity(instance)
    following: set[str] = set()
    for endpoint in loaded.model.endpoints:
        for _, itinerary in loaded.itineraries(endpoint):  # after a split, the stage before it hands to any branch
            for position, step in enumerate(itinerary):
                if step.instance == instance:
                    following |= _subjects(itinerary, next_hops(itinerary, position).stages)
    own: list[str] = []
    for phase in loaded.instances[instance].cls.phases:
        durable = stage_durable(instance, phase)
        own += [
            f"{JS_API}.CONSUMER.CREATE.{PIPELINE_STREAM}.{durable}.{stage_subject(instance, phase)}",
            f"{JS_API}.CONSUMER.INFO.{PIPELINE_STREAM}.{durable}",
            pull_request_subject(PIPELINE_STREAM, durable),
            f"$JS.ACK.{PIPELINE_STREAM}.{durable}.>",
        ]
    # Its replicas' heartbeats, and the breaker records of its own calls (``<instance>.state|window|probe``).
    own += [f"$KV.{REGISTRY_BUCKET}.{instance}.>", f"$KV.{BREAKERS_BUCKET}.{instance}.>"]
    # The plugin's own stores (``Plugin.kv``: rate-limit budgets, cached responses): its instance's keys only.
    for bucket in PLUGIN_BUCKETS:
        own += [*kv_api(bucket), f"$KV.{bucket}.{instance}.>"]
    # The stall watch asks how far the stages it hands envelopes to have acknowledged (``pipeline.stalls``).
    probes = {f"{JS_API}.CONSUMER.INFO.{PIPELINE_STREAM}.{subject_durable(s)}" for s in sorted(following)}
    publish = [*sorted(following), *sorted(probes), *own, *forwarder_publish()]
    return Identity(name, Role.STAGE, Permissions(tuple(publish), tuple(forwarder_subscribe(name))), instance)


def group(loaded: LoadedBlueprint, name: str) -> Identity:
    """The union of the members' stage identities, without publishing to the members' own subjects."""
    members = loaded.model.groups()[name]
    inside = {stage_subject(m, phase) for m in members for phase in loaded.instances[m].cls.phases}
    publish: dict[str, None] = {}
    for member in members:
        allowed = stage(loaded, member).permissions.publish
        publish.update((subject, None) for subject in allowed if subject not in inside)
    identity = group_identity(name)
    return Identity(identity, Role.GROUP, Permissions(tuple(publish), tuple(forwarder_subscribe(identity))))


def admin() -> Identity:
    return Identity(ADMIN, Role.ADMIN, Permissions((">",), (">",)))


def tap() -> Identity:
    """The event-stream subscribers and the CLI's read-outs: nothing on the pipeline, no KV writes.

    * its consumers of ``BW_EVENTS`` (audit stores' ``bw-audit-*``, ``bw-analytics``): create, read, pull, ack,
      and delete (analytics replays the stream at start);
    * the alert events analytics raises (``bw.evt.alert.*``) and nothing else on the event subjects;
    * watching ``bw_registry`` (the "no live replica" alert, ``backworks top``) and ``bw_breakers`` (``top``), the
      size of ``BW_DLQ`` (the "DLQ growing" alert) and the stages' consumer figures (``top``: ``CONSUMER.INFO``
      only; never a pipeline message, which holds request bodies and credentials);
    * the report: analytics subscribes to ``bw.tap.report`` and answers the requester (``allow_responses``);
      ``backworks report`` / ``top`` publish the request.
    """
    api = f"{JS_API}.CONSUMER"
    publish = (
        f"{JS_API}.STREAM.INFO.{EVENTS_STREAM}",
        f"{api}.CREATE.{EVENTS_STREAM}",
        f"{api}.CREATE.{EVENTS_STREAM}.>",
        f"{api}.DURABLE.CREATE.{EVENTS_STREAM}.*",
        f"{api}.INFO.{EVENTS_STREAM}.*",
        f"{api}.DELETE.{EVENTS_STREAM}.*",
        f"{api}.MSG.NEXT.{EVENTS_STREAM}.*",
        f"$JS.ACK.{EVENTS_STREAM}.>",
        f"$JS.FC.{EVENTS_STREAM}.>",
        alert_subject("*"),
        REPORT_SUBJECT,
        f"{JS_API}.STREAM.INFO.{DLQ_STREAM}",
        f"{api}.INFO.{PIPELINE_STREAM}.*",
        *kv_api(REGISTRY_BUCKET),
        *kv_api(BREAKERS_BUCKET),
    )
    subscribe = (f"{identity_inbox(TAP)}.>", REPORT_SUBJECT)
    return Identity(TAP, Role.TAP, Permissions(publish, subscribe, responses=True))


def identities(loaded: LoadedBlueprint) -> dict[str, Identity]:
    """Every identity a deployment of ``loaded`` needs, by name: admin, gateway, one per instance, one per
    co-location group, tap."""
    stages = [stage(loaded, name) for name in sorted(loaded.instances)]
    groups = [group(loaded, name) for name in sorted(loaded.model.groups())]
    found = [admin(), gateway(loaded), *stages, *groups, tap()]
    return {identity.name: identity for identity in found}


def widened(identity: Identity, recorded: dict[str, Any] | None) -> Identity:
    """``identity`` with the subjects a recorded entry already grants added: a service started from an older
    blueprint file never takes away what a newer revision (``backworks apply``) granted the fleet."""
    if recorded is None:
        return identity

    def union(mine: tuple[str, ...], theirs: list[str]) -> tuple[str, ...]:
        return (*mine, *(subject for subject in theirs if subject not in mine))

    permissions = Permissions(
        union(identity.permissions.publish, recorded.get("publish", [])),
        union(identity.permissions.subscribe, recorded.get("subscribe", [])),
        responses=identity.permissions.responses or bool(recorded.get("allow_responses")),
    )
    return Identity(identity.name, identity.role, permissions, identity.instance)


def base_identities() -> dict[str, Identity]:
    """The identities a broker has before any blueprint is known: admin and tap."""
    return {ADMIN: admin(), TAP: tap()}


__all__ = [
    "ADMIN",
    "GATEWAY",
    "TAP",
    "Identity",
    "Permissions",
    "Role",
    "group_identity",
    "identities",
    "stage_identity",
]
