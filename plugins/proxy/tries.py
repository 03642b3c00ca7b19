"""One try at one upstream, and what its outcome means: pass the response on, retry, or answer with a problem."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import httpx

from backworks.contracts.envelope import HttpResponse
from backworks.contracts.types import Headers
from backworks.pipeline.problems import problem
from backworks.plugins.proxy.forwarding import response_headers

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110 §9.2.2: methods a client may repeat; only these are retried once the request may have been sent."""
RETRYABLE_STATUSES = frozenset({502, 503, 504})
"""Upstream answers that say the request was not served (its own upstream or capacity failed)."""


class Result(str, Enum):
    """How one try ended."""

    ANSWERED = "answered"
    """The upstream sent a whole response."""
    REFUSED = "refused"
    """No connection: nothing reached the upstream, so any method may be retried."""
    TIMED_OUT = "timed-out"
    """No whole response within the try's time limit."""
    BROKEN = "broken"
    """The connection failed after the request may have been sent."""
    TOO_LARGE = "too-large"
    """The response body is larger than a broker message can carry."""


@dataclass(frozen=True)
class Try:
    """The outcome of one try at ``target``."""

    target: str
    result: Result
    response: HttpResponse | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        """Whether it counts against the target's health (5xx answers and transport failures; not a large body)."""
        if self.result is Result.ANSWERED:
            return self.response is not None and self.response.status >= 500
        return self.result is not Result.TOO_LARGE

    def retryable(self, method: str) -> bool:
        if self.result is Result.REFUSED:
            return True
        if method.upper() not in IDEMPOTENT:
            return False
        if self.result is Result.ANSWERED:
            return self.response is not None and self.response.status in RETRYABLE_STATUSES
        return self.result in (Result.TIMED_OUT, Result.BROKEN)

    def answer(self, stage: str, request_id: str, earlier: Sequence[Try] = ()) -> HttpResponse:
        """What the client gets when this was the last try (``earlier``: the tries before it, for the problem)."""
        if self.result is Result.ANSWERED and self.response is not None:
            return self.response
        status, title = {
            Result.REFUSED: (502, "Bad Gateway"),
            Result.BROKEN: (502, "Bad Gateway"),
            Result.TOO_LARGE: (502, "Bad Gateway"),
            Result.TIMED_OUT: (504, "Gateway Timeout"),
        }[self.result]
        detail = self.detail
        if earlier:
            detail += "; tried before: " + ", ".join(f"{t.target} ({t.result.value})" for t in earlier)
        tried = [t.target for t in (*earlier, self)]
        return problem(status, title, detail, stage=stage, target=self.target, tried=tried, request_id=request_id)


async def attempt(client: httpx.AsyncClient, target: str, request: httpx.Request, timeout: float, limit: int) -> Try:
    """Send ``request`` and read the whole response (at most ``limit`` body bytes) within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True)
            try:
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    return _too_large(target, f"declares {declared} bytes", limit)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > limit:
                        return _too_large(target, f"sent more than {limit} bytes", limit)
                    chunks.append(chunk)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return Try(target, Result.TIMED_OUT, detail=f"upstream {target} did not answer within {timeout * 1000:.0f} ms")
    except httpx.ConnectError as exc:
        return Try(target, Result.REFUSED, detail=f"upstream {target} refused the connection ({_reason(exc)})")
    except httpx.TransportError as exc:
        return Try(target, Result.BROKEN, detail=f"upstream {target} failed mid-request ({_reason(exc)})")
    headers: Headers = response_headers(response.headers.multi_items())
    answer = HttpResponse(status=response.status_code, headers=headers, body=b"".join(chunks))
    return Try(target, Result.ANSWERED, response=answer)


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _too_large(target: str, what: str, limit: int) -> Try:
    detail = (
        f"upstream {target} answered with a body that {what}, more than the {limit} bytes one broker message can "
        "carry with this request; raise the broker's max_payload and the proxy's max_response_bytes, or ask for less"
    )
    return Try(target, Result.TOO_LARGE, detail=detail)
