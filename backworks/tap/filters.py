"""What ``--since 10m`` and ``--status 4xx`` mean, for the commands that read the tap's stores."""

from __future__ import annotations

import re

from backworks.pipeline.errors import PipelineError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
STATUS_CLASS = re.compile(r"^([1-5])xx$")
STATUS = re.compile(r"^([1-5]\d\d)$")


class FilterError(PipelineError):
    """A filter option could not be read."""


def seconds(text: str) -> float:
    """``"10m"`` -> 600.0 (units s, m, h, d)."""
    found = DURATION.match(text.lower())
    if found is None:
        raise FilterError(f"cannot read the duration {text!r}: write a number and a unit, e.g. 90s, 10m, 2h, 1d")
    return float(found.group(1)) * UNITS[found.group(2)]


def status_range(text: str) -> tuple[int, int]:
    """``"4xx"`` -> (400, 499); ``"404"`` -> (404, 404)."""
    lowered = text.strip().lower()
    if found := STATUS_CLASS.match(lowered):
        first = int(found.group(1)) * 100
        return first, first + 99
    if found := STATUS.match(lowered):
        return int(found.group(1)), int(found.group(1))
    raise FilterError(f"cannot read the status {text!r}: write a class (2xx, 4xx, 5xx) or a code (404)")


def status_class(status: int) -> str:
    """404 -> ``"4xx"``."""
    return f"{status // 100}xx"
