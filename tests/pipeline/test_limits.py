"""Resource limits and the event-loop watchdog, each in a child process (they change or end the process)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

from backworks.pipeline.limits import MIN_STALL, STALLED_EXIT, LoopWatchdog

CHILD_TIMEOUT = 60


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )


def test_apply_sets_the_rlimits_and_the_memory_limit_bites() -> None:
    done = run("""
        import json, resource
        from backworks.contracts.blueprint import ResourceLimits
        from backworks.pipeline.limits import apply

        applied = apply(ResourceLimits(memory_mb=512, cpu_seconds=30, open_files=64))
        try:
            bytearray(1024 * 1024 * 1024)
            allocation = "succeeded"
        except MemoryError:
            allocation = "MemoryError"
        print(json.dumps({
            "applied": applied,
            "as": resource.getrlimit(resource.RLIMIT_AS),
            "cpu": resource.getrlimit(resource.RLIMIT_CPU),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "allocation": allocation,
        }))
    """)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["applied"] == {"memory_mb": 512, "cpu_seconds": 30, "open_files": 64}
    assert found["as"] == [512 * 1024 * 1024] * 2
    assert found["cpu"] == [30, 31]
    assert found["nofile"] == 64
    assert found["allocation"] == "MemoryError", "1 GiB does not fit in a 512 MiB address space"


def test_apply_without_limits_changes_nothing_and_open_files_stay_under_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    done = run(f"""
        import json, resource
        from backworks.contracts.blueprint import ResourceLimits
        from backworks.pipeline.limits import apply

        before = resource.getrlimit(resource.RLIMIT_AS)
        untouched = apply(ResourceLimits())
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, {min(hard, 128)}))
        clipped = apply(ResourceLimits(open_files=100_000))
        print(json.dumps([untouched, before == resource.getrlimit(resource.RLIMIT_AS), clipped]))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{}, True, {"open_files": min(hard, 128)}]


def test_the_watchdog_never_waits_less_than_the_minimum() -> None:
    assert LoopWatchdog(0.1).stall_after == MIN_STALL
    assert LoopWatchdog(MIN_STALL * 3).stall_after == MIN_STALL * 3


WATCHDOG = """
    import asyncio, sys, time
    from backworks.pipeline import limits

    limits.MIN_STALL = 1.0  # not 2 s, to keep the test short; still far above a loaded machine's hiccups

    async def main() -> None:
        watchdog = limits.LoopWatchdog(1.0)
        watchdog.start()
        await asyncio.sleep(1.5)  # a loop that keeps turning is left alone
        print("healthy", flush=True)
        {before_block}
        time.sleep({block})  # a plugin blocking the loop
        print("survived", flush=True)

    asyncio.run(main())
"""


def test_the_watchdog_ends_a_process_whose_loop_is_blocked() -> None:
    done = run(WATCHDOG.replace("{before_block}", "pass").replace("{block}", "8"))  # ended after ~1-1.5 s
    assert done.returncode == STALLED_EXIT, (done.returncode, done.stdout, done.stderr)
    assert done.stdout.split() == ["healthy"]
    assert "event loop blocked for" in done.stderr and "exiting to be restarted" in done.stderr


def test_a_stopped_watchdog_lets_the_loop_block() -> None:
    done = run(WATCHDOG.replace("{before_block}", "watchdog.stop()").replace("{block}", "2.5"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["healthy", "survived"]


def test_a_stopped_and_resumed_process_is_not_blamed_for_a_blocked_loop() -> None:
    """SIGSTOP for twice ``stall_after`` while the loop is busy, then SIGCONT: the process was stopped, the loop was
    not blocked, so the replica lives. (The loop is busy in short CPU-bound turns, as a loaded replica is, so on
    resumption the watchdog looks before the loop has turned again.)"""
    code = textwrap.dedent("""
        import asyncio, time
        from backworks.pipeline import limits

        async def main() -> None:
            watchdog = limits.LoopWatchdog(3.0)
            watchdog.start()
            print("ready", flush=True)
            started = time.monotonic()
            while time.monotonic() - started < 14:
                cpu = time.process_time()
                while time.process_time() - cpu < 0.3:  # a turn of CPU-bound work, far below stall_after
                    pass
                await asyncio.sleep(0)
            print("survived", flush=True)

        asyncio.run(main())
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(2.0)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(6.0)
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, (child.returncode, err)
    assert out.split() == ["survived"]
    assert "event loop blocked" not in err
