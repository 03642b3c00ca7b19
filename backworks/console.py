"""What every CLI command shares: stdout for data, stderr for diagnostics, one ``--format``, one way to fail.

A command's result (a table, a report, JSON) goes to ``output()`` (stdout), so ``backworks dlq list | less``
shows it; progress, warnings and errors go to ``console`` (stderr).
"""

from __future__ import annotations

import sys
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_METRICS_HOST = "127.0.0.1"
"""Where ``--metrics-port`` binds unless ``--metrics-host`` says otherwise (``pipeline.servicemetrics``'s default)."""
TABLE_WIDTH = 200
"""Width of tables written to a pipe or file, so that no column is cut."""


class StderrConsole:
    """The diagnostics console (stderr), a rich ``Console`` created on first use.

    Importing rich costs ~15 ms, and ``backworks validate`` of a valid blueprint never writes a diagnostic.
    """

    @cached_property
    def rich(self) -> Console:
        """One message per line, never wrapped at the terminal width (greppable when piped to a log)."""
        from rich.console import Console

        return Console(stderr=True, soft_wrap=True)

    def print(self, *objects: Any, **options: Any) -> None:
        """``rich.console.Console.print`` on stderr."""
        self.rich.print(*objects, **options)


console = StderrConsole()
"""Diagnostics: one message per line on stderr (data goes to ``output()``, on stdout)."""


class Format(str, Enum):
    """How a command prints its result."""

    TEXT = "text"
    """For people: tables and sentences."""
    JSON = "json"
    """For programs: one JSON document on stdout."""


BlueprintArg = Annotated[Path, typer.Argument(help="Path to the blueprint YAML file.", show_default=False)]
NatsOption = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="NATS URL(s), comma-separated. Default: the blueprint's `nats.url`; for `embedded`, "
        "the broker started by `backworks nats`/`backworks up` in this state directory.",
        show_default=False,
    ),
]
"""``--nats`` of a command given a blueprint: its servers, unless the blueprint's own are meant."""
LocalNatsOption = Annotated[
    str | None,
    typer.Option("--nats", help="NATS URL(s). Default: the embedded broker started in this state directory."),
]
"""``--nats`` of a command without a blueprint: the broker `backworks nats`/`backworks up` started here."""
FormatOption = Annotated[Format, typer.Option("--format", help="Output format: text or json.", case_sensitive=False)]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics on this port (0: any free port, logged). Default: none.",
        show_default=False,
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="Address the metrics port binds (with --metrics-port).")
]


def output() -> Console:
    """Console for a command's result (stdout); wide when not a terminal."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` and return the ``typer.Exit`` to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)
