"""Run the chaos report: ``python ops/chaos/run.py [--requests-per-fault 200 --faults a,b --output DIR]`` (``--help``).

Starts ``backworks up`` on ops/chaos/chaos.yaml (the ``fault`` plugin, allowed for this run only), drives a bounded
load, injects each fault in turn, stops every process it started and prints, per fault: requests sent, answered
by status, degraded, lost, duplicated and the time to full recovery. Writes results.json, table.txt and table.md
under chaos-results/<time>/ (or --output). Exits 1 if any request was lost or handled twice. With --cluster, the
cluster faults (leader-kill, node-partition, rolling-restart) against `up --nats` on a 3-node loopback cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)  # so `ops.chaos` imports when run as a script from anywhere
    from ops.chaos.runner import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
