"""What the proxy changes on the way through: the upstream path, hop-by-hop headers (RFC 9110 §7.6.1) removed
both ways, and the ``X-Forwarded-*`` and ``Forwarded`` (RFC 7239) headers added on the way up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit

from backworks.contracts.envelope import Envelope
from backworks.contracts.types import Headers

HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"})
"""Headers about one connection, never forwarded; so are ``proxy-*`` and those named in ``Connection``."""
REQUEST_ID_HEADER = "x-request-id"
"""The gateway's request id goes upstream too, so both sides log the same id."""
SET_BY_CLIENT = frozenset({"host", "content-length", REQUEST_ID_HEADER})
"""Request headers the HTTP client writes for the upstream connection itself."""
GATEWAY_SCHEME = "http"
"""The gateway serves plain HTTP (TLS, if any, ends in front of it)."""
PLACEHOLDER = re.compile(r"\{path\.([A-Za-z0-9_]+)\}")
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def without_hop_by_hop(headers: Iterable[tuple[str, str]]) -> Headers:
    """``headers`` without hop-by-hop ones: the fixed list, ``proxy-*``, and any the ``Connection`` header names."""
    items = [(name.lower(), value) for name, value in headers]
    named = {token.strip().lower() for name, value in items if name == "connection" for token in value.split(",")}
    return [
        (name, value)
        for name, value in items
        if name not in HOP_BY_HOP and name not in named and not name.startswith("proxy-")
    ]


def upstream_path(envelope: Envelope, strip_prefix: str, rewrite: str | None) -> str:
    """Path and query string to request from the upstream (appended to the target's base URL)."""
    if rewrite is not None:
        path = PLACEHOLDER.sub(lambda m: envelope.path_params.get(m.group(1), ""), rewrite)
    else:
        path = envelope.path
        if strip_prefix and (path == strip_prefix or path.startswith(strip_prefix.rstrip("/") + "/")):
            path = path[len(strip_prefix.rstrip("/")) :]
        path = path if path.startswith("/") else "/" + path
    if envelope.query:
        path += ("&" if "?" in path else "?") + urlencode(envelope.query)
    return path


def _quoted(value: str) -> str:
    return value if TOKEN.match(value) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(client: str) -> str:
    return f"[{client}]" if ":" in client else client


def request_headers(envelope: Envelope, target_url: str, preserve_host: bool) -> Headers:
    """Headers for the upstream request: the client's minus hop-by-hop ones, ``Host``, and the forwarding headers."""
    original_host = envelope.header("host")
    headers = [(name, value) for name, value in without_hop_by_hop(envelope.headers) if name not in SET_BY_CLIENT]
    host = original_host if preserve_host and original_host else urlsplit(target_url).netloc
    headers.insert(0, ("host", host))
    if envelope.request_id:
        headers.append((REQUEST_ID_HEADER, envelope.request_id))
    forwarded_for = [value for name, value in headers if name == "x-forwarded-for"]
    earlier_forwarded = [value for name, value in headers if name == "forwarded"]
    headers = [(n, v) for n, v in headers if n not in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                                                       "forwarded")]  # fmt: skip
    client = envelope.client
    if client:
        forwarded_for.append(client)
    if forwarded_for:
        headers.append(("x-forwarded-for", ", ".join(forwarded_for)))
    headers.append(("x-forwarded-proto", GATEWAY_SCHEME))
    if original_host:
        headers.append(("x-forwarded-host", original_host))
    element = [f"for={_quoted(_node(client))}"] if client else []
    if original_host:
        element.append(f"host={_quoted(original_host)}")
    element.append(f"proto={GATEWAY_SCHEME}")
    headers.append(("forwarded", ", ".join([*earlier_forwarded, ";".join(element)])))
    return headers


SET_BY_GATEWAY = frozenset({"content-length", "date"})
"""Response headers the gateway's HTTP server writes itself (a second ``Date`` would make the response invalid)."""


def response_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """Upstream response headers to pass on: without hop-by-hop ones and those the gateway sets."""
    return [(name, value) for name, value in without_hop_by_hop(headers) if name not in SET_BY_GATEWAY]
