"""The hardened HTTP edge: uvicorn's httptools protocol with the gateway's limits enforced while parsing.

uvicorn buffers a request's line and headers without bound and times out neither a fresh connection nor
one that sends its headers a byte at a time; httptools accumulates a header that arrives in pieces by
concatenation (each piece copies what came before). ``EdgeProtocol`` counts as bytes arrive:

- the request target in ``on_url`` (beyond ``max_request_line_bytes``: 414);
- each complete header in ``on_header`` (lines and bytes), and, after each read while the head is still
  incomplete, every byte received for it (beyond ``max_header_bytes`` or ``max_header_lines``: 431), so at
  most the limit plus one socket read is ever buffered for a head;
- the time from a connection's opening, or from the first byte of a later request, until its headers are
  complete (beyond ``header_timeout_s``: 408 and closed), then until its body is (``body_timeout_s``);
  an idle keep-alive connection is closed after ``keepalive_timeout_s`` (uvicorn's own timer).

Whatever the edge answers itself is ``application/problem+json`` with ``connection: close``; after a 4xx
the connection stops parsing, half-closes and drops what the client still sends for ``LINGER_S`` (closing
at once with unread data makes the kernel reset the connection, and the client may never read the answer).
In the common case (a head in one read) the only added work per request is a few integer updates and one
ordered-dict move in the connection guard: no timer is armed (one is only while a head or body is unfinished
after a read).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, ClassVar

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from backworks.contracts.blueprint import GatewaySettings
from backworks.gateway.connections import ConnectionGuard, EdgeEvent
from backworks.gateway.errors import RequestRefused
from backworks.gateway.headwrite import HeadFirstTransport
from backworks.pipeline.problems import PROBLEM_CONTENT_TYPE, problem_type

log = structlog.get_logger("backworks.gateway.edge")

LINGER_S = 2.0
"""Seconds a refused connection keeps reading (and dropping) what its client still sends before closing."""
REQUEST_LINE_OVERHEAD = 32
"""Bytes of a request line besides its target (method, version, spaces, CRLF), allowed on top of the limits."""
HEADER_OVERHEAD = 4
"""Bytes of a header line besides its name and value (``: `` and CRLF)."""


def problem_message(status: int, title: str, detail: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection, written before any app runs."""
    request_id = uuid.uuid4().hex
    body = json.dumps(
        {"type": problem_type(title), "title": title, "status": status, "detail": detail, "request_id": request_id}
    ).encode()
    head = [STATUS_LINE[status]]
    head.extend(name + b": " + value + b"\r\n" for name, value in default_headers)
    head.append(
        b"content-type: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\nconnection: close\r\n\r\n"
        % (PROBLEM_CONTENT_TYPE.encode(), len(body), request_id.encode())
    )
    return b"".join(head) + body


class EdgeProtocol(HttpToolsProtocol):
    """One client connection, parsed with the edge's limits. Bound to settings by ``edge_protocol``."""

    settings: ClassVar[GatewaySettings]
    guard: ClassVar[ConnectionGuard]
    # The limits checked per header or read, as plain class attributes (read on the hot path).
    max_header_bytes: ClassVar[int]
    max_header_lines: ClassVar[int]
    max_request_line_bytes: ClassVar[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.settings.keepalive_timeout_s  # type: ignore[assignment]  # a float is fine for call_later
        self._admitted = False
        self._reading_head = True
        self._head_bytes = 0
        """Bytes received since the current head began (every one of them belongs to it while it is incomplete)."""
        self._url_bytes = 0
        self._header_lines = 0
        self._header_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._refused = False
        """An error was answered: parse nothing more, only drop what still arrives."""

    # Connection lifetime ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows it too
        super().connection_made(transport)
        if not self.guard.admit(self):
            self._refused = True
            detail = "the gateway holds as many connections as it may and every one is busy; retry shortly"
            self.transport.write(problem_message(503, "Too many connections", detail, self._default_headers()))
            self.transport.close()
            return
        self._admitted = True
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._admitted:
            self.guard.release(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a new connection (the guard already stopped counting it)."""
        self._admitted = False
        self._cancel_head_timer()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with the head limits checked and our own answers to parser errors."""
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, RequestRefused):
                self._refuse(exc.__context__)
            else:
                self._refuse(RequestRefused(400, "Bad request", "the request could not be parsed", EdgeEvent.MALFORMED))
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._refuse(RequestRefused(400, "Bad request", "the request is not valid HTTP/1.1", EdgeEvent.MALFORMED))
            return
        if self._reading_head:
            if self._head_bytes:
                header_bytes = self._head_bytes - self._url_bytes - REQUEST_LINE_OVERHEAD
                if header_bytes > self.max_header_bytes:
                    self._refuse(self._too_large(f"more than {self.max_header_bytes} bytes"))
                elif self._head_timer is None:
                    self._arm_head_timer()
        elif self._body_timer is None and self.cycle is not None and self.cycle.more_body:
            self._body_timer = self.loop.call_later(self.settings.body_timeout_s, self._body_timed_out)

    def _unsupported_upgrade_warning(self) -> None:
        """The gateway serves no WebSocket: the request is served as plain HTTP, without uvicorn's two warnings
        per request (a log flood anyone could cause)."""
        log.debug("upgrade request served as plain HTTP", upgrade=(self._get_upgrade() or b"").decode("latin-1"))

    def send_400_response(self, msg: str) -> None:
        """Any 400 uvicorn itself would send (it sends text/plain) goes out as problem+json."""
        self._refuse(RequestRefused(400, "Bad request", msg, EdgeEvent.MALFORMED))

    # Parser callbacks ------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = self._header_lines = self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_request_line_bytes:
            limit = self.max_request_line_bytes
            detail = f"the request target is longer than {limit} bytes (gateway.max_request_line_bytes)"
            raise RequestRefused(414, "URI too long", detail, EdgeEvent.URI_TOO_LONG)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lines = self._header_lines = self._header_lines + 1
        size = self._header_bytes = self._header_bytes + len(name) + len(value) + HEADER_OVERHEAD
        if lines > self.max_header_lines:
            raise RequestRefused(
                431,
                "Request header fields too large",
                f"more than {self.max_header_lines} header lines (gateway.max_header_lines)",
                EdgeEvent.HEADERS_TOO_LARGE,
            )
        if size > self.max_header_bytes:
            raise self._too_large(f"more than {self.max_header_bytes} bytes")
        # uvicorn's on_header (0.55), inlined: this runs for every header of every request, and a super() call
        # is as costly as the rest. tests/gateway/test_edge.py checks headers still reach the app as uvicorn's.
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which RFC 9110 excludes from the value
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._cancel_head_timer()
        self.guard.busy(self)
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # a new request: its head and body in one write
            self.cycle.transport = HeadFirstTransport(self.transport, self.loop)  # type: ignore[assignment]  # duck-typed: write, close, is_closing

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._body_timer is not None:
            self._cancel_body_timer()
        self._reading_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self.guard.resting(self)

    # Limits ----------------------------------------------------------------------------------------------

    def _too_large(self, what: str) -> RequestRefused:
        detail = f"the request headers are {what} (gateway.max_header_bytes)"
        return RequestRefused(431, "Request header fields too large", detail, EdgeEvent.HEADERS_TOO_LARGE)

    def _refuse(self, refusal: RequestRefused) -> None:
        """Answer ``refusal``, stop parsing, half-close, and drop what still arrives for ``LINGER_S``."""
        self._refused = True
        self._cancel_head_timer()
        self.guard.report.count(refusal.event)
        self.guard.resting(self)
        if self.transport.is_closing():
            return
        self.transport.write(problem_message(refusal.status, refusal.title, refusal.detail, self._default_headers()))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_S, self.transport.close)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.settings.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head behind a request still being served: its turn comes later
            return
        self._refused = True
        self.guard.report.count(EdgeEvent.HEADER_TIMEOUT)
        if self._head_bytes:
            limit = self.settings.header_timeout_s
            detail = f"the request line and headers did not arrive within {limit:g} s (gateway.header_timeout_s)"
            self.transport.write(problem_message(408, "Request timeout", detail, self._default_headers()))
        self.transport.close()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        self._refused = True
        self.guard.report.count(EdgeEvent.BODY_TIMEOUT)
        if not self.cycle.response_started:
            limit = self.settings.body_timeout_s
            detail = f"the request body did not arrive within {limit:g} s (gateway.body_timeout_s)"
            self.transport.write(problem_message(408, "Request timeout", detail, self._default_headers()))
        else:
            self.cycle.transport.close()  # sends a response head still held (``headwrite``), then closes
        self.transport.close()  # the app reading the body sees a disconnect

    def _default_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.server_state.default_headers)


def edge_protocol(settings: GatewaySettings, guard: ConnectionGuard) -> type[EdgeProtocol]:
    """``EdgeProtocol`` bound to ``settings`` and a connection guard shared by all its connections."""

    class BoundEdgeProtocol(EdgeProtocol):
        pass

    BoundEdgeProtocol.settings = settings
    BoundEdgeProtocol.guard = guard
    BoundEdgeProtocol.max_header_bytes = settings.max_header_bytes
    BoundEdgeProtocol.max_header_lines = settings.max_header_lines
    BoundEdgeProtocol.max_request_line_bytes = settings.max_request_line_bytes
    return BoundEdgeProtocol
