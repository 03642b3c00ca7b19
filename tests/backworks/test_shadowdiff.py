"""The shadow-replay diff: what counts as a difference, and what a replay's report adds up to."""

from __future__ import annotations

import hashlib
import json

from backworks.pipeline.secrets import MASK
from backworks.shadowdiff import Compared, DiffReport, Observed, Outcome, compare, json_pointers


def seen(status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b'{"ok":true}') -> Observed:
    return Observed.of(status, [("content-type", "application/json")] if headers is None else headers, body, 5.0, 0.5)


def test_the_same_response_is_the_same_whatever_the_volatile_headers() -> None:
    old = seen(headers=[("Content-Type", "application/json"), ("server-timing", "a;dur=1"), ("traceresponse", "x"),
                        ("x-backworks-revision", "3")])  # fmt: skip
    new = seen(headers=[("content-type", "application/json"), ("server-timing", "b;dur=2")])
    result = compare("r1", "GET", "/x", old, new)
    assert result.outcome is Outcome.SAME and result.kinds == []


def test_status_headers_and_body_differences_are_named() -> None:
    old = seen(200, [("x-version", "1"), ("vary", "a"), ("vary", "b")], b'{"a": 1, "b": [1, 2], "c": "x"}')
    new = seen(201, [("X-Version", "2"), ("vary", "b"), ("vary", "a"), ("x-new", "y")], b'{"a": 1, "b": [1, 3]}')
    result = compare("r1", "POST", "/x", old, new)
    assert result.outcome is Outcome.DIFFERS
    assert result.status == (200, 201)
    assert result.headers == {"vary": (["a", "b"], ["b", "a"]), "x-new": ([], ["y"]), "x-version": (["1"], ["2"])}
    assert result.body is not None and result.body["pointers"] == ["/b/1", "/c"]
    assert result.kinds == ["status", "header vary", "header x-new", "header x-version", "body"]


def test_a_text_body_difference_shows_where_the_texts_part() -> None:
    result = compare("r1", "GET", "/x", seen(body=b"hello world"), seen(body=b"hello there"))
    assert result.body is not None
    assert (
        result.body["at"] == 6
        and result.body["recorded"].endswith("world")
        and result.body["replayed"].endswith("there")
    )


def test_a_cut_recorded_body_is_compared_by_the_whole_body_digest() -> None:
    whole = b"x" * 1000
    cut = Observed(200, [], whole[:10], hashlib.sha256(whole).hexdigest(), 1.0)
    assert compare("r1", "GET", "/x", cut, seen(headers=[], body=whole)).outcome is Outcome.SAME
    assert compare("r1", "GET", "/x", cut, seen(headers=[], body=whole + b"!")).kinds == ["body"]


def test_credentials_never_show_in_a_difference() -> None:
    old = seen(headers=[("set-cookie", MASK)])
    new = seen(headers=[("set-cookie", "session=secret-value-123")])
    result = compare("r1", "GET", "/x", old, new)
    assert result.outcome is Outcome.SAME  # masked on both sides: a cookie's value is not compared, nor shown
    assert "secret-value-123" not in json.dumps(result.as_dict())


def test_extra_ignored_headers_are_left_out() -> None:
    old, new = seen(headers=[("etag", "a")]), seen(headers=[("etag", "b")])
    assert compare("r1", "GET", "/x", old, new).kinds == ["header etag"]
    assert compare("r1", "GET", "/x", old, new, frozenset({"etag"})).outcome is Outcome.SAME


def test_json_pointers_escape_and_name_missing_members() -> None:
    assert list(json_pointers({"a/b": 1, "m~": 2}, {"a/b": 2})) == ["/a~1b", "/m~0"]
    assert list(json_pointers([1, 2], [1, 2, 3])) == ["/"]
    assert list(json_pointers(1, 1.0)) == ["/"]  # an integer became a float: a client may see it


def test_the_report_counts_outcomes_differences_and_latency() -> None:
    report = DiffReport("notes", "s1", "v2", "v1")
    for number in range(10):
        old = Observed.of(200, [("x-version", "1")], b"a", 10.0 + number, 1.0)
        new = Observed.of(200 if number else 500, [("x-version", "2" if number % 2 else "1")], b"a", 1.0, 0.1 * number)
        report.add(compare(f"r{number}", "GET", "/x", old, new), old, new)
    report.add(Compared("r10", "GET", "/x", Outcome.ERROR, error="no key"))
    assert report.counts() == {"replayed": 11, "same": 4, "differs": 6, "error": 1}
    assert report.differences() == {"header x-version": 5, "status": 1}
    assert report.errors() == {"no key": 1}
    assert report.example("status") == "200 -> 500"
    assert report.example("header x-version") == "1 -> 2"
    data = report.as_dict()
    assert data["latency_ms"]["recorded_total"] == {"p50": 14.5, "p95": 18.55, "p99": 18.91}
    assert data["latency_ms"]["replayed_stage"]["p50"] == 0.45
    assert len(data["requests"]) == 7  # the ones that differ or failed, not the same ones
