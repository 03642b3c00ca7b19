"""The gateway's per-request readings of the ASGI scope agree with what Starlette's ``Request`` would give."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from backworks.gateway.endpoint import query_items, url_path

CASES = [
    ("/bench/x", b"api_key=k", b"127.0.0.1:18555"),
    ("/a?b#c\\d", b"", b"example.com"),
    ("//double/leading", b"q", b"example.com:80"),
    ("/ü/é space", "x=é&y=%C3%A9".encode(), b"h"),
    ("/q", b"a=1&a=2&b=&c&d=%20x+y&e=%26&=z", b"h"),
    ("/no-host", b"x=1", None),
]


@pytest.mark.parametrize(("path", "query", "host"), CASES)
def test_path_and_query_are_starlettes(path: str, query: bytes, host: bytes | None) -> None:
    headers = [(b"host", host)] if host is not None else []
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "path": path,
        "query_string": query,
        "headers": headers,
    }
    request = Request(scope)
    assert url_path(request) == request.url.path
    assert query_items(query) == list(request.query_params.multi_items())
