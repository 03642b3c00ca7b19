"""Backworks: declare an API in a YAML blueprint, extend it with plugins that run as NATS services.

Plugin authors import the contract from here::

    from backworks import RequestProcessor, Continue, Respond, Fail, Envelope

and test their plugins with ``backworks.sdk`` (harness, stage runner, profiler).
"""

from backworks.contracts.envelope import Envelope, HttpResponse, Principal
from backworks.pipeline.plugin import (
    Action,
    Alert,
    AlertSeverity,
    Analytics,
    Category,
    Continue,
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

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Alert",
    "AlertSeverity",
    "Analytics",
    "Category",
    "Continue",
    "EmptyConfig",
    "Envelope",
    "Fail",
    "Handler",
    "Health",
    "HealthStatus",
    "HttpResponse",
    "Monitoring",
    "Plugin",
    "Principal",
    "RequestProcessor",
    "Respond",
    "ResponseEnhancer",
    "Security",
    "__version__",
]
