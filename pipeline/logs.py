"""structlog setup shared by every service: JSON in production, key-value in a terminal.

The request id is bound through contextvars, so every line logged while serving a request carries it.
Plugin config secrets are masked in every line (``backworks.pipeline.secrets.mask_secrets``), and so are the
credentials of the request being served (``backworks.pipeline.credentials``).

Tracebacks never carry local variables: structlog's ``dict_tracebacks`` and rich's pretty tracebacks show
them by default, and a frame's locals hold request headers, envelopes and whole blueprints with their config
values (a client that hung up mid-body once produced a 26 KB ERROR line of them). ``TRACEBACKS`` and
``CONSOLE_TRACEBACKS`` below are the only traceback renderers a Backworks process uses.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

from backworks.pipeline import credentials, secrets

LOG_FORMAT_ENV = "BACKWORKS_LOG_FORMAT"
LOG_LEVEL_ENV = "BACKWORKS_LOG_LEVEL"
LogFormat = Literal["json", "console", "auto"]

TRACEBACKS = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
"""``dict_tracebacks`` without the locals of each frame: file, line, function and the exception's message only."""
CONSOLE_TRACEBACKS = structlog.processors.format_exc_info
"""The standard library's traceback text: it never prints locals."""


def configure(service: str, fmt: str | None = None, level: str | None = None) -> None:
    """Configure structlog (and stdlib logging, for libraries) for one service process."""
    fmt = fmt or os.environ.get(LOG_FORMAT_ENV, "auto")
    level_name = (level or os.environ.get(LOG_LEVEL_ENV, "info")).upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become data before rendering, so that ``mask_secrets`` reaches their messages too.
            TRACEBACKS if use_json else CONSOLE_TRACEBACKS,
            secrets.mask_secrets,
            credentials.mask_credentials,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, pid=os.getpid())
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
