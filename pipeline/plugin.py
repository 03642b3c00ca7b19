"""The plugin contract: what a plugin author writes.

A plugin is a small class with metadata as class attributes, a pydantic ``Config`` model (its JSON
Schema is generated from it), and async hooks. It subclasses the base class of its category:

====================  ======================================  =========================================
category              hooks (in the order they run)           phase
====================  ======================================  =========================================
``RequestProcessor``  ``process_request``                     request (itinerary order)
                      ``process_response`` (optional)         response (reverse chain order)
``Handler``           ``handle``                              request (last: produces the response)
``Security``          ``authenticate`` then ``authorize``     request
                      ``audit_log``                           response (sees the final response)
``ResponseEnhancer``  ``enhance_response``                    response (reverse chain order)
``Monitoring``        ``collect_metrics`` then                response
                      ``generate_alerts`` (returns alerts)
``Analytics``         ``track_event``                         response
                      ``generate_report`` (on demand)         none: returns figures, not an action
====================  ======================================  =========================================

A security plugin implements any of its three hooks and serves only the phases they need. Monitoring and
analytics observe finished requests, so they run in the response phase and are not critical by default.

Each envelope hook gets the envelope and returns an action:

- ``Continue(envelope)``: go on with the (possibly changed) envelope;
- ``Respond(response)``: answer now (e.g. 401, 429); response-phase stages still run;
- ``Fail(reason)``: this stage failed; criticality decides whether the request fails or goes on.

Hooks of one phase run in the order above; the first that does not continue ends the phase. The runtime
calls them (``backworks.pipeline.executor.dispatch``); a plugin never dispatches itself. Raising an
exception or overrunning ``max_execution_time`` counts as ``Fail``. Every plugin also has ``startup``,
``shutdown``, ``health_check`` and ``get_metrics``. ``backworks.pipeline.contract.verify`` checks all of this when the
plugin is loaded.

Shared state: a plugin whose replicas (and every gateway) must share state keeps it in NATS KV through
``store = await self.kv(bucket)`` (usually in ``startup``), on one of ``contracts.names.PLUGIN_BUCKETS``
(``bw_cache``, ``bw_ratelimit``). The store (``backworks.pipeline.stores.KeyValueStore``: ``get``, ``put``,
compare-and-set ``update(key, value, last=revision)``, ``delete``, ``watch``) holds only this instance's keys. The
runtime provides it: whatever runs the plugin calls ``plugin.bind(runtime)`` before ``startup`` -- the stage host
binds the replica's NATS connection (``NatsRuntime``), the SDK harness and ``backworks profile`` an in-process
``MemoryRuntime`` unless given another. A plugin never opens its own connection to the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import Phase
from backworks.contracts.types import Category
from backworks.pipeline import secrets
from backworks.pipeline.actions import Action, Alert, AlertSeverity, Continue, Fail, Health, HealthStatus, Respond
from backworks.pipeline.errors import StoreNotBound

if TYPE_CHECKING:  # the stores module imports nats-py: a plugin that never uses KV does not pay for it
    from backworks.pipeline.stores import KeyValueStore, PluginRuntime

__all__ = [
    "CATEGORY_BASES",
    "DEFAULT_MAX_EXECUTION_TIME",
    "FRAMEWORK_CLASSES",
    "LIFECYCLE_HOOKS",
    "Action",
    "Alert",
    "AlertSeverity",
    "Analytics",
    "Category",
    "Continue",
    "Credentials",
    "EmptyConfig",
    "Fail",
    "Handler",
    "Health",
    "HealthStatus",
    "HookSpec",
    "Monitoring",
    "Plugin",
    "PluginClass",
    "RequestProcessor",
    "Respond",
    "ResponseEnhancer",
    "Security",
    "default_hook",
    "implements",
    "numeric_figures",
]

DEFAULT_MAX_EXECUTION_TIME = 0.1
"""Seconds a hook may take before it counts as failed (the design's 100 ms)."""
DEFAULT_MARK = "__backworks_default__"


@dataclass(frozen=True)
class HookSpec:
    """One hook of the contract: its name, the phase it serves (``None``: not per envelope), its signature."""

    name: str
    phase: Phase | None
    takes_envelope: bool = True

    @property
    def signature(self) -> str:
        """How a plugin author writes the hook."""
        return f"async def {self.name}(self{', envelope' if self.takes_envelope else ''})"


LIFECYCLE_HOOKS = (
    HookSpec("startup", None, takes_envelope=False),
    HookSpec("shutdown", None, takes_envelope=False),
    HookSpec("health_check", None, takes_envelope=False),
    HookSpec("get_metrics", None, takes_envelope=False),
)

F = TypeVar("F", bound=Callable[..., Any])


def default_hook(function: F) -> F:
    """Marks a base-class hook that a plugin has not implemented (so it is skipped, and not a phase)."""
    setattr(function, DEFAULT_MARK, True)
    return function


def implements(owner: object, hook: str) -> bool:
    """True when ``owner`` (a plugin class or instance) implements ``hook`` itself."""
    method = getattr(owner, hook, None)
    return method is not None and not getattr(method, DEFAULT_MARK, False)


@dataclass(frozen=True)
class Credentials:
    """Where requests carry credentials a plugin reads: these are redacted wherever a request is shown."""

    headers: tuple[str, ...] = ()
    """Header names (any case), e.g. ``("x-api-key",)``."""
    query: tuple[str, ...] = ()
    """Query parameter names, e.g. ``("api_key",)``."""


class EmptyConfig(BaseModel):
    """Config of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Plugin(Generic[ConfigT]):
    """Base of every plugin. Subclass one of the category classes below, not this one.

    Metadata (class attributes): ``name``, ``version`` (semver), ``description``, ``dependencies``
    (plugin name -> version constraint such as ``">=1.0,<2"``), ``capabilities`` (what it provides, e.g.
    ``principal``), ``requires_capabilities`` (what an earlier stage of the same endpoint must provide, by any
    plugin that has the capability), ``Config`` (a pydantic
    model with ``extra="forbid"``), ``max_execution_time`` (seconds), ``is_critical`` and ``priority``
    (higher runs earlier among plugins the blueprint and dependencies leave unordered).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    dependencies: ClassVar[Mapping[str, str]] = MappingProxyType({})
    capabilities: ClassVar[Sequence[str]] = ()
    requires_capabilities: ClassVar[Sequence[str]] = ()
    category: ClassVar[Category]
    Config: ClassVar[type[BaseModel]] = EmptyConfig
    max_execution_time: ClassVar[float] = DEFAULT_MAX_EXECUTION_TIME
    is_critical: ClassVar[bool] = False
    priority: ClassVar[int] = 0
    HOOKS: ClassVar[tuple[HookSpec, ...]] = ()
    """The category's hooks, in the order they run within a phase."""
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    """Hooks the category needs; with ``REQUIRES_ANY`` one of them is enough."""
    REQUIRES_ANY: ClassVar[bool] = False
    phases: ClassVar[tuple[Phase, ...]] = ()
    """Derived from the hooks the class implements; never set it by hand."""
    phases_set_by_hand: ClassVar[bool] = False
    phase_hooks: ClassVar[Mapping[Phase, tuple[str, ...]]] = MappingProxyType({})
    """Per phase, the names of the hooks the class implements, in the order the executor calls them."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.phases_set_by_hand = "phases" in cls.__dict__
        cls.phase_hooks = MappingProxyType({
            phase: tuple(s.name for s in cls.HOOKS if s.phase is phase and implements(cls, s.name)) for phase in Phase
        })  # fmt: skip
        cls.phases = tuple(phase for phase in Phase if cls.phase_hooks[phase])

    runtime: PluginRuntime | None = None
    """What ``kv`` asks for stores; set by ``bind`` (the stage host, the harness), never by the plugin."""

    def __init__(self, config: ConfigT, *, instance: str) -> None:
        self.config = config
        self.instance = instance
        secrets.register(self.secret_values)

    def bind(self, runtime: PluginRuntime) -> None:
        """Give this plugin its runtime (its KV stores). Called by whatever runs the plugin, before ``startup``."""
        self.runtime = runtime

    async def kv(self, bucket: str) -> KeyValueStore:
        """This instance's store on ``bucket`` (``bw_cache`` or ``bw_ratelimit``), shared by every replica.

        Raises ``StoreNotBound`` when nothing bound a runtime (a plugin constructed by hand: bind
        ``backworks.pipeline.stores.MemoryRuntime()`` in a test, or run it in ``PluginHarness``), and
        ``StoreUnavailable`` when the bucket cannot be opened.
        """
        if self.runtime is None:
            raise StoreNotBound(
                f"plugin instance {self.instance!r} asked for KV bucket {bucket!r} but no runtime is bound: the "
                "stage host binds one before startup; elsewhere call plugin.bind(MemoryRuntime()) or use PluginHarness"
            )
        return await self.runtime.kv(bucket, self.instance)

    @cached_property
    def secret_values(self) -> frozenset[str]:
        """The secret values of this instance's config (masked in failure reasons and logs)."""
        return frozenset(secrets.secret_values(self.config))

    @classmethod
    def credentials(cls, config: Any) -> Credentials:
        """Where requests carry the credentials this plugin, configured with ``config``, reads (none by default).

        Logs, events, dead letters, health and problem documents redact these besides the standard ones
        (``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``).
        """
        return Credentials()

    async def startup(self) -> None:
        """Called once per replica before the first message."""

    async def shutdown(self) -> None:
        """Called once per replica after the last message."""

    async def health_check(self) -> Health:
        """Report this replica's health; published with its heartbeat."""
        return Health()

    async def get_metrics(self) -> dict[str, float]:
        """Plugin-specific figures, published with the heartbeat."""
        return {}


class RequestProcessor(Plugin[ConfigT]):
    """Reads or changes the request before the handler; may also see the response (``process_response``).

    A processor that implements ``process_response`` serves the response phase too (reverse chain order, like
    a response enhancer): a rate limiter adds its headers to every response, a cache stores what the handler
    answered, CORS adds its headers to actual responses.
    """

    category = Category.REQUEST_PROCESSOR
    HOOKS = (HookSpec("process_request", Phase.REQUEST), HookSpec("process_response", Phase.RESPONSE))
    REQUIRED = ("process_request",)

    @default_hook
    async def process_request(self, envelope: Envelope) -> Action:
        """Read or change the request; ``Respond`` to answer early."""
        raise NotImplementedError

    @default_hook
    async def process_response(self, envelope: Envelope) -> Action:
        """Optional: read or change ``envelope.response`` on the way back (response phase)."""
        raise NotImplementedError


class ResponseEnhancer(Plugin[ConfigT]):
    """Changes the response after the handler (response phase, reverse chain order)."""

    category = Category.RESPONSE_ENHANCER
    HOOKS = (HookSpec("enhance_response", Phase.RESPONSE),)
    REQUIRED = ("enhance_response",)

    @default_hook
    async def enhance_response(self, envelope: Envelope) -> Action:
        """Change ``envelope.response``."""
        raise NotImplementedError


class Handler(Plugin[ConfigT]):
    """Produces the response of an endpoint. A handler is critical: without it there is no answer."""

    category = Category.HANDLER
    is_critical = True
    HOOKS = (HookSpec("handle", Phase.REQUEST),)
    REQUIRED = ("handle",)

    @default_hook
    async def handle(self, envelope: Envelope) -> Action:
        """Set ``envelope.response`` and continue (or ``Respond``)."""
        raise NotImplementedError


class Security(Plugin[ConfigT]):
    """Authenticates and authorizes requests (request phase) and keeps an audit log (response phase).

    Implement any of the three hooks; the plugin serves only the phases its hooks need. A failing security
    stage should fail the request, so security plugins are critical by default.
    """

    category = Category.SECURITY
    is_critical = True
    HOOKS = (
        HookSpec("authenticate", Phase.REQUEST),
        HookSpec("authorize", Phase.REQUEST),
        HookSpec("audit_log", Phase.RESPONSE),
    )
    REQUIRED = ("authenticate", "authorize", "audit_log")
    REQUIRES_ANY = True

    @default_hook
    async def authenticate(self, envelope: Envelope) -> Action:
        """Establish who calls (set ``envelope.principal``) or ``Respond`` 401."""
        raise NotImplementedError

    @default_hook
    async def authorize(self, envelope: Envelope) -> Action:
        """Decide whether ``envelope.principal`` may do this, or ``Respond`` 403."""
        raise NotImplementedError

    @default_hook
    async def audit_log(self, envelope: Envelope) -> Action:
        """Record the finished request and its response."""
        raise NotImplementedError


class Monitoring(Plugin[ConfigT]):
    """Observes every finished request: ``collect_metrics``, then ``generate_alerts``.

    The executor logs each alert (``alert`` events) and attaches it to ``envelope.annotations["alerts"]``; the number
    raised is published with the heartbeat as ``alerts_raised`` unless ``get_metrics`` is overridden.
    """

    category = Category.MONITORING
    HOOKS = (HookSpec("collect_metrics", Phase.RESPONSE), HookSpec("generate_alerts", None))
    REQUIRED = ("collect_metrics",)

    alerts_raised: int = 0

    @default_hook
    async def collect_metrics(self, envelope: Envelope) -> Action:
        """Record figures about this request (latency from ``envelope.timings``, status...)."""
        raise NotImplementedError

    @default_hook
    async def generate_alerts(self, envelope: Envelope) -> list[Alert]:
        """Alerts that the figures collected so far call for (none by default)."""
        return []

    async def get_metrics(self) -> dict[str, float]:
        """How many alerts this replica raised."""
        return {"alerts_raised": float(self.alerts_raised)}


class Analytics(Plugin[ConfigT]):
    """Tracks every finished request (``track_event``) and reports on them (``generate_report``).

    The report's numeric figures are published with the heartbeat unless ``get_metrics`` is overridden.
    """

    category = Category.ANALYTICS
    HOOKS = (HookSpec("track_event", Phase.RESPONSE), HookSpec("generate_report", None, takes_envelope=False))
    REQUIRED = ("track_event",)

    @default_hook
    async def track_event(self, envelope: Envelope) -> Action:
        """Record this request as an event."""
        raise NotImplementedError

    @default_hook
    async def generate_report(self) -> dict[str, Any]:
        """What the events tracked so far add up to (JSON data)."""
        return {}

    async def get_metrics(self) -> dict[str, float]:
        """The numbers of ``generate_report``, keyed by dotted path."""
        return numeric_figures(await self.generate_report())


def numeric_figures(report: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a (nested) report, keyed by dotted path."""
    figures: dict[str, float] = {}
    for key, value in report.items():
        path = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            figures[path] = float(value)
        elif isinstance(value, Mapping):
            figures.update(numeric_figures(value, f"{path}."))
    return figures


CATEGORY_BASES: dict[Category, type[Plugin[Any]]] = {
    Category.REQUEST_PROCESSOR: RequestProcessor,
    Category.RESPONSE_ENHANCER: ResponseEnhancer,
    Category.HANDLER: Handler,
    Category.SECURITY: Security,
    Category.MONITORING: Monitoring,
    Category.ANALYTICS: Analytics,
}
FRAMEWORK_CLASSES: frozenset[type[Any]] = frozenset({Plugin, *CATEGORY_BASES.values()})

PluginClass = type[Plugin[Any]]
