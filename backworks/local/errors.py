"""Errors of running Backworks on this machine (the whole tree is drawn in ``backworks.contracts.errors``).

::

    BackworksError
     └── LocalError
          ├── PortInUse
          ├── NotReady
          └── UnknownNode
"""

from __future__ import annotations

from backworks.contracts.errors import BackworksError


class LocalError(BackworksError):
    """Root of the errors of the local tooling (``backworks up``, ``backworks nats``)."""


class PortInUse(LocalError):
    """A port ``backworks up`` or ``backworks nats`` should listen on is taken by another process."""

    def __init__(self, host: str, port: int, option: str) -> None:
        self.host, self.port, self.option = host, port, option
        super().__init__(f"port {port} is in use (on {host}): stop what listens there or choose another {option}")


class NotReady(LocalError):
    """The broker ``backworks up`` started (or was given) did not come up in time."""


class UnknownNode(LocalError):
    """``backworks nats stepdown`` was given a node name no replicated Backworks stream has among its peers."""
