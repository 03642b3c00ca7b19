"""The chaos run as a rich table (stdout, ``table.txt``) and as Markdown (``table.md``, README-ready)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = ("fault", "sent", "answered (status: count)", "degraded", "lost", "duplicated", "failures over", "recovery")


def _answered(row: dict[str, Any]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in row["answered"].items()) or "-"


def _recovery(row: dict[str, Any]) -> str:
    return "not recovered" if row["recovery_s"] is None else f"{row['recovery_s']:.2f} s"


def rows(results: dict[str, Any]) -> list[list[str]]:
    shown = []
    for row in results["faults"]:
        counts = [str(row[key]) for key in ("degraded", "lost", "duplicated")]
        window = f"{row.get('failed_window_s', 0.0):.2f} s"
        shown.append([row["fault"], str(row["sent"]), _answered(row), *counts, window, _recovery(row)])
    return shown


def table(results: dict[str, Any]) -> Table:
    environment = results["environment"]
    shown = Table(
        title=f"Chaos report, {environment['date']} ({environment['cpus']} CPUs, {environment['platform']})",
        caption="failures over: first to last failed request; recovery: from the fault's end until every request is a "
        "full (not degraded) 200",
        title_justify="left",
    )
    for column in COLUMNS:
        shown.add_column(column, justify="left" if column in ("fault", "answered (status: count)") else "right")
    for row in rows(results):
        shown.add_row(*row)
    return shown


def markdown(results: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], shown: Table, out: Path) -> None:
    buffer = io.StringIO()
    Console(file=buffer, width=160, color_system=None).print(shown)
    (out / "table.txt").write_text(buffer.getvalue())
    (out / "table.md").write_text(markdown(results))


def show(shown: Table) -> None:
    Console(width=160).print(shown)
