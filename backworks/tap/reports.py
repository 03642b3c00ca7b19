"""Asking the analytics service for its report (``bw.tap.report``), and printing it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from rich.table import Table

from backworks.contracts.names import REPORT_SUBJECT
from backworks.pipeline.errors import PipelineError

REPORT_TIMEOUT_S = 2.0
DIMENSIONS = (
    ("endpoints", "endpoint", "endpoints"),
    ("branches", "split branch", "canary split branches, side by side"),
    ("instances", "plugin instance", "plugin instances"),
    ("consumers", "consumer", "consumers"),
)


class AnalyticsUnavailable(PipelineError):
    """No analytics service answered."""


async def ask(client: Client, since_s: float, timeout: float = REPORT_TIMEOUT_S) -> dict[str, Any]:
    """The analytics service's report over the last ``since_s`` seconds."""
    try:
        reply = await client.request(REPORT_SUBJECT, json.dumps({"since_s": since_s}).encode(), timeout=timeout)
    except (NoRespondersError, NatsTimeoutError, TimeoutError):
        raise AnalyticsUnavailable(
            f"no analytics service answered on {REPORT_SUBJECT}: start `backworks analytics serve BLUEPRINT`"
        ) from None
    found: dict[str, Any] = json.loads(reply.data)
    return found


def tables(report: dict[str, Any]) -> list[Table]:
    """One rich table per dimension that has rows."""
    built = []
    for key, label, title in DIMENSIONS:
        rows = report.get(key) or {}
        if not rows:
            continue
        table = Table(title=f"{title}, last {report['since_s']:g} s", title_justify="left")
        with_breakers = key == "instances"
        for column in (label, "count", "2xx", "4xx", "5xx", "error %", "skips", "p50 ms", "p95 ms", "p99 ms"):
            table.add_column(column, justify="left" if column == label else "right")
        if with_breakers:
            table.add_column("breaker transitions", justify="left")
        for name, row in rows.items():
            statuses = row.get("statuses", {})
            by_class = [str(statuses.get(c, 0)) if statuses else "-" for c in ("2xx", "4xx", "5xx")]  # stages: none
            table.add_row(
                name, str(row["count"]), *by_class,
                f"{100 * row['error_rate']:.1f}", str(row["skips"]),
                *(f"{row[p]:.3f}" if row[p] is not None else "-" for p in ("p50_ms", "p95_ms", "p99_ms")),
                *([breaker_cell(row)] if with_breakers else []),
            )  # fmt: skip
        built.append(table)
    return built


def breaker_cell(row: dict[str, Any]) -> str:
    """``open 2, half-open 1, closed 1; last -> open at 22:58:03 UTC`` (``-`` when none in the window)."""
    counts = row.get("breaker_transitions") or {}
    last = row.get("last_transition")
    if not counts or not isinstance(last, dict):
        return "-"
    at = datetime.fromtimestamp(float(last["at"]), UTC).strftime("%H:%M:%S UTC")
    return ", ".join(f"{state} {count}" for state, count in counts.items()) + f"; last -> {last['to']} at {at}"
