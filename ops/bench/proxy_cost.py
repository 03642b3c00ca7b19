"""What a ``proxy`` handler costs: the same upstream measured bare, through a ``proxy`` chain, and a ``mock`` twin.

``python -m ops.bench.proxy_cost [--duration S] [--connections N] [--out FILE]`` starts the bare endpoint
(``ops.bench.bare``) as the upstream and ``backworks up`` with a blueprint of two handler-only endpoints:
``/proxied`` (a ``proxy`` handler to the bare upstream) and ``/mocked`` (a ``mock`` handler with the same body).
It measures, with the same load generator and load:

- ``upstream``: the bare endpoint directly (the floor);
- ``proxied``: through the gateway, the pipeline and the proxy handler to the upstream;
- ``mocked``: through the gateway and the pipeline, answered by ``mock`` (the pipeline without the proxy hop).

``proxied - upstream`` is the added cost of putting the API behind Backworks; ``proxied - mocked`` is the cost
of the proxy handler's own hop. Kept apart from the main benchmark (``ops.bench.run``) on purpose: one small
module, its own processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from backworks.local.ports import LOOPBACK, free_port
from ops.bench.bare import BODY
from ops.bench.loadgen import Job, run
from ops.bench.processes import Children, backworks, python_module
from ops.bench.stats import summarize

DEFAULT_DURATION_S = 5.0
DEFAULT_CONNECTIONS = 8
DEFAULT_WARMUP_S = 1.0
READY_TIMEOUT_S = 90.0
POLL_S = 0.2
BLUEPRINT = """\
name: proxy-cost
nats: {{url: embedded, storage: file}}
defaults: {{timeout_ms: 5000}}
endpoints:
  proxied:
    path: /proxied
    methods: [GET]
    handler: {{type: proxy, config: {{targets: [{{url: "http://{host}:{upstream}"}}], rewrite: /}}}}
  mocked:
    path: /mocked
    methods: [GET]
    handler: {{type: mock, config: {{status: 200, body: {body}}}}}
"""


def wait_until(url: str, ok: Any) -> None:
    """Poll ``url`` until ``ok(response)``; ``TimeoutError`` after ``READY_TIMEOUT_S``."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if ok(httpx.get(url, timeout=2.0)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)
    raise TimeoutError(f"{url} not ready within {READY_TIMEOUT_S} s")


def measure(port: int, path: str, duration: float, connections: int, warmup: float) -> dict[str, Any]:
    """One load run; the summary (ms, requests/s) with the statuses seen."""
    result = asyncio.run(run(Job(LOOPBACK, port, path, connections, duration, warmup)))
    failed = sum(count for status, count in result["statuses"].items() if not status.startswith("2"))
    summary = summarize(result["latencies_ns"], result["elapsed"], failed + result["error_count"]).as_dict()
    return {**summary, "statuses": result["statuses"], "errors": result["errors"]}


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds measured per system")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS, help="keep-alive clients")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds before measuring")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bw-proxy-cost-") as scratch:
        folder = Path(scratch)
        upstream, gateway = free_port(), free_port()
        blueprint = folder / "blueprint.yaml"
        blueprint.write_text(BLUEPRINT.format(host=LOOPBACK, upstream=upstream, body=BODY.decode()))
        children = Children(folder / "logs", env={"BACKWORKS_STATE_DIR": str(folder / "state")})
        try:
            children.spawn("upstream", python_module("ops.bench.bare", "--port", str(upstream)))
            children.spawn("up", backworks("up", str(blueprint), "--port", str(gateway)))
            wait_until(f"http://{LOOPBACK}:{upstream}/", lambda response: response.status_code == 200)
            base = f"http://{LOOPBACK}:{gateway}"
            wait_until(f"{base}/_backworks/health", lambda response: response.json().get("status") == "healthy")
            results = {
                name: measure(port, path, args.duration, args.connections, args.warmup)
                for name, port, path in (
                    ("upstream", upstream, "/"),
                    ("proxied", gateway, "/proxied"),
                    ("mocked", gateway, "/mocked"),
                )
            }
        finally:
            children.stop()
    print(f"{'system':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}")
    for name, summary in results.items():
        print(f"{name:<10}{summary['throughput']:>10}{summary['p50']:>10}{summary['p99']:>10}{summary['failed']:>8}")
    added = results["proxied"]["p50"] - results["upstream"]["p50"]
    hop = results["proxied"]["p50"] - results["mocked"]["p50"]
    print(f"p50 added by Backworks in front of the upstream: {added:.3f} ms; by the proxy hop alone: {hop:.3f} ms")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
