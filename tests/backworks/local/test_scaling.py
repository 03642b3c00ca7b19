"""``backworks scale``'s side of the state directory: what it checks, what it writes, what ``up`` reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backworks.local import scaling


def test_scale_requests_are_checked_against_the_running_up(tmp_path: Path) -> None:
    with pytest.raises(scaling.ScaleError, match="no `backworks up` is running"):
        scaling.running(tmp_path)
    scaling.publish(tmp_path, {"stamp": 1, "secure": 2})
    assert scaling.running(tmp_path) == scaling.UpStatus(os.getpid(), {"stamp": 1, "secure": 2})
    assert oct((tmp_path / scaling.STATUS_FILE).stat().st_mode & 0o777) == "0o600", "only its owner may read it"
    known = {"stamp": 1, "secure": 2}
    assert scaling.parse(["stamp=3", "secure=0"], known) == {"stamp": 3, "secure": 0}
    for wrong, message in [
        ("nope=2", "unknown instance 'nope'; `backworks up` runs: secure, stamp"),
        ("stamp=-1", "'stamp=-1': the number of replicas must be 0 or more"),
        ("stamp", "expected INSTANCE=N, got 'stamp'"),
        ("stamp=x", "expected INSTANCE=N"),
    ]:
        with pytest.raises(scaling.ScaleError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            scaling.parse([wrong], known)
    with pytest.raises(scaling.ScaleError, match="nothing to scale"):
        scaling.parse([], known)


def test_a_recorded_up_that_is_gone_is_reported(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    scaling.write_atomically(tmp_path / scaling.STATUS_FILE, {"pid": int(gone.stdout), "replicas": {}, "request": 0})
    with pytest.raises(scaling.ScaleError, match=r"\(pid \d+\) is not running"):
        scaling.running(tmp_path)


def test_up_notices_each_new_request_once(tmp_path: Path) -> None:
    requests = scaling.Requests(tmp_path)
    assert requests.new() is None
    scaling.write_atomically(tmp_path / scaling.REQUEST_FILE, {"stamp": 2})
    found = requests.new()
    assert found is not None and found[1] == {"stamp": 2}
    assert requests.new() is None, "the same request is applied once"
