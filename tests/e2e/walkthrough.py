"""A README walkthrough as a test: its ``console`` code blocks, each ``$ command`` followed by its expected output.

A command runs in ``bash`` from the repository's root with ``http://127.0.0.1:8080`` replaced by the address of the
API under test; ``export NAME=$(command)`` sets ``$NAME`` for the commands after it. Outputs are compared after
volatile parts are normalised on both sides (dates, request ids, timings, ``Age``, rate-limit resets, timestamps).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_ADDRESS = "http://127.0.0.1:8080"
COMMAND_TIMEOUT_S = 30.0
BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXPORT = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=\$\((.*)\)$")
VOLATILE_HEADERS = re.compile(
    r"^(date|x-request-id|server-timing|ratelimit-reset|age|retry-after): .*$", re.MULTILINE | re.IGNORECASE
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
REQUEST_ID = re.compile(r'"request_id": "[0-9a-f]+"')
TRACE_RESPONSE = re.compile(r"^traceresponse: .*\n?", re.MULTILINE | re.IGNORECASE)
"""W3C Trace Context's response header: new on every response, left out of the walkthrough's outputs."""
REQUEST_ID_TEXT = re.compile(r"\(request [0-9a-f]+\)")


@dataclass(frozen=True)
class Step:
    """One ``$ command`` of the walkthrough and the output the README shows for it."""

    command: str
    expected: str


def steps(readme: str) -> list[Step]:
    """Every ``$ command`` of the ``console`` blocks of ``readme``, in order, with the lines up to the next one."""
    found: list[Step] = []
    for block in BLOCK.findall(readme):
        command: str | None = None
        output: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    found.append(Step(command, "\n".join(output)))
                command, output = line[2:], []
            elif command is not None:
                output.append(line)
        if command is not None:
            found.append(Step(command, "\n".join(output)))
    return found


def normalise(text: str) -> str:
    """``text`` without what changes from run to run."""
    text = TRACE_RESPONSE.sub("", text.replace("\r\n", "\n")).strip()
    text = VOLATILE_HEADERS.sub(lambda match: f"{match.group(1).lower()}: ...", text)
    text = TIMESTAMP.sub("<time>", text)
    text = REQUEST_ID.sub('"request_id": "..."', text)
    return REQUEST_ID_TEXT.sub("(request ...)", text)


def run(step: Step, base: str, env: dict[str, str]) -> str:
    """The output of ``step`` against the API at ``base`` (``env`` gains what an ``export`` sets)."""
    command = step.command.replace(README_ADDRESS, base)
    exported = EXPORT.match(command)
    script = f"printf %s $({exported.group(2)})" if exported else command
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    if exported:
        env[exported.group(1)] = result.stdout.strip()
        return ""
    return result.stdout + result.stderr
