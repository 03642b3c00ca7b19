"""structlog setup shared by every service: JSON in production, key-value in a terminal.

The request id is bound through contextvars, so every line logged while serving a request carries it.
Plugin config secrets are masked in every line (``backworks.pipeline.secrets.mask_secrets``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

from backworks.pipeline import secrets

LOG_FORMAT_ENV = "BACKWORKS_LOG_FORMAT"
LOG_LEVEL_ENV = "BACKWORKS_LOG_LEVEL"
LogFormat = Literal["json", "console", "auto"]


def configure(service: str, fmt: str | None = None, level: str | None = None) -> None:
    """Configure structlog (and stdlib logging, for libraries) for one service process."""
    fmt = fmt or os.environ.get(LOG_FORMAT_ENV, "auto")
    level_name = (level or os.environ.get(LOG_LEVEL_ENV, "info")).upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become data before rendering, so that ``mask_secrets`` reaches their messages too.
            structlog.processors.dict_tracebacks if use_json else structlog.processors.format_exc_info,
            secrets.mask_secrets,
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
