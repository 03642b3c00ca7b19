"""Backworks: declare an API in a YAML blueprint, extend it with plugins that run as NATS services.

Plugin authors import the contract from here::

    from backworks import RequestProcessor, Continue, Respond, Fail, Envelope

and test their plugins with ``backworks.sdk`` (harness, stage runner, profiler).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backworks.contracts.envelope import Envelope, HttpResponse, Principal
    from backworks.pipeline.errors import StoreConflict, StoreUnavailable
    from backworks.pipeline.plugin import (
        Action,
        Alert,
        AlertSeverity,
        Analytics,
        Category,
        Continue,
        Credentials,
        EmptyConfig,
        Fail,
        Handler,
        Health,
        HealthStatus,
        Monitoring,
        Plugin,
        RequestProcessor,
        Respond,
        ResponseEnhancer,
        Security,
    )
    from backworks.pipeline.problems import problem
    from backworks.pipeline.stores import KeyValueStore

_CONTRACT = {"Envelope": "backworks.contracts.envelope", "HttpResponse": "backworks.contracts.envelope",
             "Principal": "backworks.contracts.envelope", "problem": "backworks.pipeline.problems",
             "KeyValueStore": "backworks.pipeline.stores", "StoreConflict": "backworks.pipeline.errors",
             "StoreUnavailable": "backworks.pipeline.errors"}  # fmt: skip
"""Where each public name lives; the rest are in ``backworks.pipeline.plugin``. Imported on first use, so that
``backworks --help`` does not pay for pydantic and the plugin contract (PEP 562)."""

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Alert",
    "AlertSeverity",
    "Analytics",
    "Category",
    "Continue",
    "Credentials",
    "EmptyConfig",
    "Envelope",
    "Fail",
    "Handler",
    "Health",
    "HealthStatus",
    "HttpResponse",
    "KeyValueStore",
    "Monitoring",
    "Plugin",
    "Principal",
    "RequestProcessor",
    "Respond",
    "ResponseEnhancer",
    "Security",
    "StoreConflict",
    "StoreUnavailable",
    "__version__",
    "problem",
]


def __getattr__(name: str) -> Any:
    if name not in __all__ or name == "__version__":
        raise AttributeError(f"module 'backworks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_CONTRACT.get(name, "backworks.pipeline.plugin")), name)
    globals()[name] = value
    return value
