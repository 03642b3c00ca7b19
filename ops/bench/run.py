"""Run the Backworks benchmark: ``python ops/bench/run.py [--rounds 3 --duration 4 ...]`` (``--help``).

Starts everything it needs on 127.0.0.1 (an embedded nats-server, the pipeline, the raw floor, the
in-process baseline, a load generator), measures them alternately, stops every process it started, and
writes results.json, table.txt, chart.png and report.md under bench-results/<timestamp>/ (or --out).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)  # so `ops.bench` imports when run as a script from anywhere
    from ops.bench.runner import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
