"""Errors of the pipeline runtime (see ``contracts.errors`` for the whole tree)."""

from __future__ import annotations

from contracts.errors import BackworksError


class PipelineError(BackworksError):
    """Root of the runtime's errors."""


class BrokerUnavailable(PipelineError):
    """NATS cannot be reached, or a stream it should hold is missing."""


class EmbeddedNatsError(PipelineError):
    """The embedded nats-server could not be found or did not start."""


class PluginLoadError(PipelineError):
    """A plugin could not be found, imported, or does not follow the contract."""
