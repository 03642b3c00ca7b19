"""Assertions for plugin tests. Each works on both kinds of result:

- an ``Action`` returned by a hook run in-process (``PluginHarness``);
- the ``Envelope`` that came back from a real stage host (``StageRunner``), where a failure is recorded in
  ``envelope.errors`` instead.

Each returns the interesting part (the envelope, the response, the failure reason) for further checks.
"""

from __future__ import annotations

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.plugin import Action, Continue, Fail, Respond

Result = Action | Envelope


def _describe(result: object) -> str:
    if isinstance(result, Envelope):
        errors = "; ".join(f"{e.stage} {e.kind}: {e.message}" for e in result.errors) or "none"
        status = result.response.status if result.response else None
        return f"envelope (response status {status}, errors: {errors})"
    return repr(result)


def assert_continued(result: Result) -> Envelope:
    """The hook went on (``Continue``), or the stage passed without error; returns the envelope."""
    if isinstance(result, Continue):
        return result.envelope
    if isinstance(result, Envelope) and not result.errors:
        return result
    raise AssertionError(f"expected the plugin to continue, got {_describe(result)}")


def assert_responded(result: Result, status: int | None = None) -> HttpResponse:
    """The hook answered (``Respond``), or the stage set a response without failing; checks ``status``."""
    responded = isinstance(result, Respond)
    passed = isinstance(result, Envelope) and result.response is not None and not result.errors
    response = result.response if isinstance(result, (Respond, Envelope)) else None
    if not (responded or passed) or response is None:
        raise AssertionError(f"expected the plugin to respond, got {_describe(result)}")
    if status is not None and response.status != status:
        raise AssertionError(f"expected response status {status}, got {response.status}: {response.body[:200]!r}")
    return response


def assert_failed(result: Result, contains: str | None = None) -> str:
    """The hook failed (``Fail``), or the stage recorded an error; returns the reason (checks ``contains``)."""
    if isinstance(result, Fail):
        reason = result.reason
    elif isinstance(result, Envelope) and result.errors:
        reason = result.errors[-1].message
    else:
        raise AssertionError(f"expected the plugin to fail, got {_describe(result)}")
    if contains is not None and contains not in reason:
        raise AssertionError(f"expected the failure reason to contain {contains!r}, got {reason!r}")
    return reason


def assert_header(target: Envelope | HttpResponse, name: str, value: str | None = None) -> str:
    """``target`` (a request envelope or a response) has header ``name`` (with ``value``); returns its value."""
    found = target.header(name)
    kind = "response" if isinstance(target, HttpResponse) else "request"
    if found is None:
        raise AssertionError(f"expected {kind} header {name!r}, headers are {target.headers!r}")
    if value is not None and found != value:
        raise AssertionError(f"expected {kind} header {name!r} to be {value!r}, got {found!r}")
    return found


def assert_no_header(target: Envelope | HttpResponse, name: str) -> None:
    """``target`` does not have header ``name``."""
    if target.header(name) is not None:
        raise AssertionError(f"expected no header {name!r}, got {target.header(name)!r}")
