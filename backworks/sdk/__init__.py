"""The plugin development kit: test a plugin in-process and inside a real stage host, and profile it.

- ``request(...)``, ``response(...)``, ``config(Plugin, ...)``: envelopes and validated configs
  (``backworks.sdk.factories``);
- ``PluginHarness``: runs the plugin's hooks in-process, as the stage host calls them
  (``backworks.sdk.harness``);
- ``StageRunner``: runs the same plugin in a real ``StageHost`` attached to a real nats-server
  (``backworks.sdk.stage``);
- ``assert_continued``, ``assert_responded``, ``assert_failed``, ``assert_header``: work on both kinds of
  result (``backworks.sdk.assertions``);
- ``MemoryRuntime``: in-process KV stores for a plugin that uses ``self.kv(bucket)`` (the harness binds a fresh
  one by default; give several harnesses one runtime to share state like replicas);
- ``profile(Plugin, ...)``: per-hook call counts, latency percentiles and allocations
  (``backworks.sdk.profiler``; also ``backworks profile``).

A test of a plugin, both ways::

    from backworks.sdk import PluginHarness, StageRunner, assert_header, assert_continued, request

    async def test_in_process() -> None:
        async with PluginHarness(Stamp, {"value": "yes"}) as harness:
            assert_header(assert_continued(await harness.request(request(path="/x"))), "x-stamp", "yes")

    async def test_in_a_real_stage_host() -> None:
        async with StageRunner(Stamp, {"value": "yes"}) as stage:
            assert_header(assert_continued(await stage.request(request(path="/x"))), "x-stamp", "yes")
"""

from backworks.pipeline.stores import MemoryRuntime
from backworks.sdk.assertions import (
    assert_continued,
    assert_failed,
    assert_header,
    assert_no_header,
    assert_responded,
)
from backworks.sdk.factories import config, request, response
from backworks.sdk.harness import HookTimeout, PluginHarness
from backworks.sdk.profiler import Profile, generated_workload, profile
from backworks.sdk.stage import StageRunner

__all__ = [
    "HookTimeout",
    "MemoryRuntime",
    "PluginHarness",
    "Profile",
    "StageRunner",
    "assert_continued",
    "assert_failed",
    "assert_header",
    "assert_no_header",
    "assert_responded",
    "config",
    "generated_workload",
    "profile",
    "request",
    "response",
]
