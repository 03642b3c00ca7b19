"""ops/bench/proxy_cost: one run with tiny counts, through real processes (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.files import ROOT

SMOKE_TIMEOUT = 150


@pytest.mark.bench
@pytest.mark.e2e
@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_the_proxy_cost_run_measures_upstream_proxied_and_mocked(tmp_path: Path) -> None:
    out = tmp_path / "proxy-cost.json"
    command = [sys.executable, "-m", "ops.bench.proxy_cost", "--duration", "0.3", "--warmup", "0.1",
               "--connections", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"upstream", "proxied", "mocked"}
    for system, figures in results.items():
        assert figures["count"] > 0 and figures["failed"] == 0, (system, figures)
        assert set(figures["statuses"]) == {"200"}, system
    assert "added by Backworks in front of the upstream" in done.stdout
