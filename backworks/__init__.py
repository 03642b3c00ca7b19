"""Backworks: declare an API in a YAML blueprint, extend it with plugins that run as NATS services.

Plugin authors import the contract from here::

    from backworks import RequestProcessor, Continue, Respond, Fail, Envelope
"""

from contracts.envelope import Envelope, HttpResponse, Principal
from pipeline.plugin import (
    Action,
    Category,
    Continue,
    Fail,
    Handler,
    Health,
    HealthStatus,
    Plugin,
    RequestProcessor,
    Respond,
    ResponseEnhancer,
)

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Category",
    "Continue",
    "Envelope",
    "Fail",
    "Handler",
    "Health",
    "HealthStatus",
    "HttpResponse",
    "Plugin",
    "Principal",
    "RequestProcessor",
    "Respond",
    "ResponseEnhancer",
    "__version__",
]
