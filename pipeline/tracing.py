"""Whether spans are exported, decided once per process without importing OpenTelemetry.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, :func:`start` returns the
process's ``pipeline.otel.Tracing`` (the SDK, batching, the OTLP/HTTP protobuf exporter, configured by the standard
``OTEL_*`` variables). Without it, :func:`start` returns None and nothing of OpenTelemetry is imported: the gateway
and the stage hosts pay one ``is None`` test per request or message.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backworks.pipeline.otel import Tracing

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


def enabled() -> bool:
    """Whether an OTLP endpoint is configured for traces."""
    return bool(os.environ.get(TRACES_ENDPOINT_ENV) or os.environ.get(ENDPOINT_ENV))


def start(service: str, instance: str | None = None) -> Tracing | None:
    """The span exporter of this process (``service.name`` = ``service``), or None when none is configured."""
    if not enabled():
        return None
    from backworks.pipeline.otel import Tracing

    return Tracing(service, instance)
