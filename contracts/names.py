"""Every name Backworks uses on the broker, in one place."""

from __future__ import annotations

from enum import Enum

from backworks.contracts.types import FailureKind


class Phase(str, Enum):
    """Which half of the pipeline a stage runs in."""

    REQUEST = "request"
    """Runs in itinerary order before and including the handler."""
    RESPONSE = "response"
    """Runs after the handler, in reverse chain order."""


NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Instance and endpoint names become NATS subject tokens and durable names."""

PIPELINE_STREAM = "BW_PIPELINE"
PIPELINE_SUBJECTS = "bw.stage.>"
EVENTS_STREAM = "BW_EVENTS"
EVENTS_SUBJECTS = "bw.evt.>"
DLQ_STREAM = "BW_DLQ"
DLQ_SUBJECTS = "bw.dlq.>"
RECORD_STREAM = "BW_RECORD"
"""Recorded requests (``backworks record``): what the gateway sent and answered, for ``backworks replay``."""
RECORD_SUBJECTS = "bw.rec.>"

BREAKERS_BUCKET = "bw_breakers"
REGISTRY_BUCKET = "bw_registry"
CONFIG_BUCKET = "bw_config"
CACHE_BUCKET = "bw_cache"
RATELIMIT_BUCKET = "bw_ratelimit"
RECORD_BUCKET = "bw_record"
"""Recording switches: one key per endpoint being recorded (``backworks record``), which the gateways watch."""
SPLITS_BUCKET = "bw_splits"
"""Canary splits the gateway rolled back (key ``<endpoint>.<split>``): every gateway replica and restart sees them."""
ALL_BUCKETS = (
    BREAKERS_BUCKET,
    REGISTRY_BUCKET,
    CONFIG_BUCKET,
    CACHE_BUCKET,
    RATELIMIT_BUCKET,
    RECORD_BUCKET,
    SPLITS_BUCKET,
)
PLUGIN_BUCKETS = (CACHE_BUCKET, RATELIMIT_BUCKET)
"""Buckets a plugin may open with ``Plugin.kv`` (its keys live under ``<instance>.``); the others are the runtime's."""

CONFIG_CURRENT_KEY = "current"
"""Key of ``bw_config`` naming the running revision (``{"revision": N}``); services watch it."""
CONFIG_PROBE_SUBJECT = "bw.config.probe"
"""Core-NATS subject ``backworks apply`` asks every service on: which revision it runs, and whether it could run a
candidate blueprint (each gateway and stage replica answers for itself)."""

REQUEST_RECEIVED_SUBJECT = "bw.evt.request.received"
REQUEST_RESPONDED_SUBJECT = "bw.evt.request.responded"
STAGE_COMPLETED_SUBJECT = "bw.evt.stage.completed"
BREAKER_EVENT_PREFIX = "bw.evt.breaker."
"""Breaker transitions: ``bw.evt.breaker.<to-state>``."""
AUDIT_DURABLE = "bw-audit"
"""Durable consumer of ``BW_EVENTS`` the audit subscribers share (``backworks audit serve``)."""
ANALYTICS_DURABLE = "bw-analytics"
"""Durable consumer of ``BW_EVENTS`` the analytics subscriber reads (``backworks analytics serve``)."""

REPORT_SUBJECT = "bw.tap.report"
"""Core-NATS request subject the analytics service answers with its aggregates (``{"since_s": 900}``)."""

INBOX_PREFIX = "_INBOX.bw"
REPLY_RESEND_SUBJECT = "bw.replies.resend"
"""Core NATS: a gateway that reconnected asks here (payload: its id) for the replies of the last few seconds again,
since a reply published while it was away was dropped (replies are not stored); see ``pipeline.replycache``."""
MSG_ID_HEADER = "Nats-Msg-Id"
FENCE_SUBJECT = "bw.stage._fence"
"""In the pipeline stream, read by no consumer: a dead-letter check publishes a later hand-off's ``Nats-Msg-Id``
there to learn whether that hand-off was stored (``pipeline.deadletters.went_on``), and deletes it at once."""
DLQ_QUEUE_GROUP = "bw-dlq"
"""Queue group every service joins for max-deliveries advisories: one handler per dead letter, fleet-wide."""


def stage_subject(instance: str, phase: Phase) -> str:
    """Subject a stage consumes from: ``bw.stage.<instance>.<phase>``."""
    return f"bw.stage.{instance}.{phase.value}"


def stage_durable(instance: str, phase: Phase) -> str:
    """Durable consumer shared by every replica of one stage."""
    return f"bw-{instance}-{phase.value}"


def gateway_inbox(gateway_id: str) -> str:
    """Wildcard the gateway subscribes to for replies."""
    return f"{INBOX_PREFIX}.{gateway_id}.*"


def reply_subject(gateway_id: str, correlation_id: str) -> str:
    """Core-NATS subject the last stage publishes the finished envelope to."""
    return f"{INBOX_PREFIX}.{gateway_id}.{correlation_id}"


def event_subject(kind: str) -> str:
    """Subject of an event on ``BW_EVENTS``: ``bw.evt.<kind>``."""
    return f"bw.evt.{kind}"


def alert_subject(state: str) -> str:
    """Subject of an alert event: ``bw.evt.alert.<state>`` (``firing`` or ``resolved``)."""
    return f"bw.evt.alert.{state}"


def stage_event_subject(kind: FailureKind) -> str:
    """Subject of a stage failure event: ``bw.evt.stage.<kind>``."""
    return f"bw.evt.stage.{kind.value}"


def security_event_subject(decision: str) -> str:
    """Subject of a security decision: ``bw.evt.security.<decision>`` (``allowed`` or ``denied``)."""
    return f"bw.evt.security.{decision}"


def breaker_event_subject(state: str) -> str:
    """Subject of a breaker transition: ``bw.evt.breaker.<to-state>`` (``open``, ``half-open``, ``closed``)."""
    return f"{BREAKER_EVENT_PREFIX}{state}"


def dlq_subject(stage_label: str) -> str:
    """Subject a dead letter of stage ``<instance>.<phase>`` is stored under: ``bw.dlq.<instance>.<phase>``."""
    return f"bw.dlq.{stage_label}"


def record_subject(endpoint: str, session: str) -> str:
    """Subject a recorded request of one recording session is stored under: ``bw.rec.<endpoint>.<session>``."""
    return f"bw.rec.{endpoint}.{session}"


def dlq_message_id(envelope_id: str, cursor: int) -> str:
    """``Nats-Msg-Id`` of a dead letter: one per envelope and stage, however many services saw the advisory."""
    return f"dlq:{envelope_id}:{cursor}"


def pull_request_subject(stream: str, durable: str) -> str:
    """JetStream API subject a pull consumer's requests for more messages go to."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"


def max_deliveries_advisory(stream: str) -> str:
    """Core-NATS subject of JetStream's advisories for messages of ``stream`` that reached ``max_deliver``."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"


def revision_key(number: int) -> str:
    """Key of revision ``number`` in ``bw_config``: ``rev.<number>``."""
    return f"rev.{number}"


def registry_key(instance: str, replica_id: str) -> str:
    """Key of one replica's heartbeat in the registry bucket."""
    return f"{instance}.{replica_id}"


def message_id(envelope_id: str, cursor: int) -> str:
    """``Nats-Msg-Id`` for the hand-off to itinerary position ``cursor``: JetStream drops repeats."""
    return f"{envelope_id}:{cursor}"


def retake_message_id(envelope_id: str, cursor: int, retake: int) -> str:
    """``Nats-Msg-Id`` of the ``retake``-th hand-off of the same envelope to the same stage (``pipeline.stalls``):
    distinct from the first, so JetStream stores it, and the same for every forwarder that might send it."""
    return f"{envelope_id}:{cursor}~{retake}"


IDENTITY_INBOX_PREFIX = "_BW_INBOX"
"""Root of the identities' private inboxes (nats-py's ``inbox_prefix``): ``_BW_INBOX.<identity>``."""


def identity_inbox(identity: str) -> str:
    """Inbox prefix of one broker identity: JetStream answers and acks come back under it, for it alone."""
    return f"{IDENTITY_INBOX_PREFIX}.{identity}"
