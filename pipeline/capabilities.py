"""Plugin capabilities the runtime itself gives meaning to (any other capability is descriptive only).

``fault-injection``: the plugin breaks requests or its own process on purpose (hangs, memory leaks, process
exits), like Envoy's fault filter. Blueprint validation refuses an instance of such a plugin unless the
validating process runs with ``BACKWORKS_ALLOW_FAULT=1``: a chaos blueprint copied into production does
not carry the opt-in along, and a production environment never sets it.

``principal``: the plugin sets ``envelope.principal`` in its request phase (``api-key``, ``jwt``). A plugin that
``requires_capabilities = ("principal",)`` (``authorize``) must come after such a plugin in every endpoint chain it
is on: blueprint validation orders the provider first, and refuses a chain without one, naming the chain.

``cors-preflight``: the plugin answers CORS preflight requests (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) itself. The gateway routes preflights to every endpoint whose chain has such
a plugin, even when its ``methods`` do not list OPTIONS (``backworks.gateway.preflight``), and blueprint
validation requires the plugin to be the first stage of the chain: a preflight carries no credentials, no body
and no parameters, so an authentication, rate-limit or validation stage before it would refuse it.
"""

from __future__ import annotations

import os

FAULT_INJECTION = "fault-injection"
"""Capability of a plugin that is for tests and chaos drills only."""
PRINCIPAL = "principal"
"""Capability of a plugin that authenticates the caller (sets ``envelope.principal``)."""
CORS_PREFLIGHT = "cors-preflight"
"""Capability of a plugin that answers CORS preflights (and so must run first on its endpoints)."""
ALLOW_FAULT_ENV = "BACKWORKS_ALLOW_FAULT"
"""Environment variable that allows fault-injection plugins (``1``, ``true`` or ``yes``)."""
_YES = frozenset({"1", "true", "yes"})


def faults_allowed() -> bool:
    """Whether this process was started with the explicit opt-in for fault-injection plugins."""
    return os.environ.get(ALLOW_FAULT_ENV, "").strip().lower() in _YES
