"""Child processes of a benchmark run: started on loopback, logged to files, CPU-accounted, stopped by pid."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from backworks.local.processes import cli_command, die_with_parent, terminate

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE = 8.0


@dataclass
class Child:
    """One started process and the label its CPU time is reported under."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path
    handle: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.handle = psutil.Process(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (0 once the process is gone)."""
        try:
            times = self.handle.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)


def python_module(module: str, *args: str) -> list[str]:
    """Command line running one of the bench's own modules with this interpreter."""
    return [sys.executable, "-m", module, *args]


def backworks(*args: str) -> list[str]:
    """Command line of the ``backworks`` CLI installed next to this interpreter."""
    return [*cli_command(), *args]


class Children:
    """Every process a run started, so that all of them are stopped, by pid, whatever happens."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.started: list[Child] = []
        self.pids: list[int] = []
        """Every pid ever started, so a run can show (and a test check) that none is left behind."""

    def spawn(self, label: str, command: list[str], *, stdin: int | None = None, stdout: int | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{label.replace(':', '-').replace(' ', '_')}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=output if stdout is None else stdout,
                stderr=output,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child = Child(label, process, log)
        self.started.append(child)
        self.pids.append(process.pid)
        return child

    def stop(self, children: list[Child] | None = None, grace: float = STOP_GRACE) -> None:
        """SIGTERM the given children (default: all), SIGKILL whatever is left after ``grace`` seconds."""
        targets = list(self.started if children is None else children)
        terminate([child.process for child in targets], grace)
        for child in targets:
            if child in self.started:
                self.started.remove(child)

    def check(self, children: list[Child]) -> None:
        """Raise if any of ``children`` has exited, naming its log."""
        for child in children:
            if not child.alive:
                tail = child.log.read_text(errors="replace")[-2000:] if child.log.exists() else ""
                raise RuntimeError(f"{child.label} (pid {child.pid}) exited with {child.process.returncode}:\n{tail}")
