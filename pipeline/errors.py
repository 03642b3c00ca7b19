"""Errors of the pipeline runtime (see ``backworks.contracts.errors`` for the whole tree)."""

from __future__ import annotations

from backworks.contracts.errors import BackworksError


class PipelineError(BackworksError):
    """Root of the runtime's errors."""


class BrokerUnavailable(PipelineError):
    """NATS cannot be reached, or a stream it should hold is missing."""


class PublishFailed(BrokerUnavailable):
    """JetStream did not acknowledge a publish: no stream, a rejection, or no answer in time."""

    def __init__(self, subject: str, reason: str, *, retryable: bool = False) -> None:
        self.subject = subject
        self.reason = reason
        self.retryable = retryable
        """No stream answered or no acknowledgement came (a stream electing a leader): trying again may work."""
        super().__init__(f"publish to {subject or 'the pipeline'} failed: {reason}")


class ReplicasUnavailable(BrokerUnavailable):
    """The blueprint asks for more stream replicas than the broker has JetStream nodes."""


class MetricsPortUnavailable(PipelineError):
    """The ``--metrics-port`` of a service cannot be bound."""


class EmbeddedNatsError(PipelineError):
    """The embedded nats-server could not be found or did not start."""


class PluginLoadError(PipelineError):
    """A plugin could not be found, imported, or does not follow the contract."""


class PluginContractError(PluginLoadError):
    """A plugin class breaks the contract. Carries the plugin name, its file and every problem with its fix."""

    def __init__(self, plugin: str, location: str, source: str, problems: list[str]) -> None:
        self.plugin = plugin
        self.location = location
        """``file:line`` of the class, when known."""
        self.source = source
        self.problems = problems
        where = ", ".join(part for part in (location, source) if part)
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"plugin {plugin!r} ({where}) breaks the plugin contract:\n{lines}")


class BreakerOpen(PipelineError):
    """A plugin instance's circuit breaker refused a call: open, or half-open with every probe slot taken.

    Nothing was sent or run. ``retry_after`` is how many seconds remain until the breaker half-opens (None once
    it has, when only its probe slots are busy): a fair ``Retry-After`` for a 503.
    """

    def __init__(self, instance: str, state: str, detail: str, retry_after: float | None = None) -> None:
        self.instance = instance
        self.state = state
        self.detail = detail
        self.retry_after = retry_after
        when = f"; it half-opens in {retry_after:.1f} s" if retry_after is not None else ""
        super().__init__(
            f"circuit breaker of plugin instance {instance!r} is {state} ({detail}){when}: the call was not made"
        )


class PluginConfigError(PipelineError):
    """A plugin config given outside a blueprint (SDK, ``backworks profile``) does not match its schema."""


class StoreError(PipelineError):
    """A plugin's key-value store (``Plugin.kv``, ``backworks.pipeline.stores``) could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store's broker or bucket did not answer in time, or refused the operation."""


class StoreConflict(StoreError):
    """A compare-and-set lost: the key was written by someone else since the revision given."""


class StoreNotBound(StoreError):
    """A plugin asked for a store before anything bound a runtime to it (``Plugin.bind``)."""


class RevisionError(PipelineError):
    """A blueprint revision in ``bw_config`` is missing, unreadable, or could not be stored."""


class RevisionConflict(RevisionError):
    """Another apply stored a revision first: read the current one and try again."""
