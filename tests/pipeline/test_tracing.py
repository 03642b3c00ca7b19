"""Without an OTLP endpoint nothing of OpenTelemetry is imported; with one, spans carry the announced ids."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from backworks.pipeline import tracing

PROBE = (
    "import sys, backworks.gateway.app, backworks.pipeline.stagehost, backworks.pipeline.tracing as t;"
    "t.start('probe');"
    "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('opentelemetry')}))"
)


def imported(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return done.stdout.strip()


def test_no_opentelemetry_is_imported_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    assert imported(env) == "[]"
    assert imported({**env, tracing.ENDPOINT_ENV: "http://127.0.0.1:9"}) == "['opentelemetry']"
    monkeypatch.delenv(tracing.ENDPOINT_ENV, raising=False)
    monkeypatch.delenv(tracing.TRACES_ENDPOINT_ENV, raising=False)
    assert tracing.start("test") is None
