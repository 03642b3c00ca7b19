"""Request credentials: where requests carry them, and redacting them wherever a request can show.

Credentials travel in the headers ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie``
(``STANDARD_HEADERS``) and in the header and query names that plugins declare through
``Plugin.credentials(config)``; ``backworks.pipeline.blueprints`` resolves those over a blueprint's instances when
it loads it and ``declare``s them for the process. Two ways keep them out of sight, used at every exit:

- ``redact_headers``, ``redact_query`` and ``redact_envelope`` replace their values with ``MASK`` (the name stays,
  so one still sees that a credential was sent): dead letters, ``dlq show``, events;
- ``values`` finds the credential strings a request carries (a header's whole value, the part after an auth
  scheme, each cookie's value), for masking free text: a plugin's exception message quoting a token is masked
  before it reaches an envelope, a breaker record or a log. While a request is served, ``bind`` ties its headers
  and query to the current task, and the structlog processor ``mask_credentials`` hides their credentials in every
  log line. Binding keeps references only (a hook that replaces the headers does not change what is masked); the
  values are found when a line is logged, so the many messages that log nothing pay nothing.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from backworks.contracts.envelope import Envelope
from backworks.contracts.types import Headers, QueryParams
from backworks.pipeline.secrets import MASK, MIN_MASKED_LENGTH, mask_value

STANDARD_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Headers that carry credentials in every deployment (lower case, as envelopes keep header names)."""
SCHEME_HEADERS = frozenset({"authorization", "proxy-authorization"})
"""Headers whose value is ``<scheme> <credentials>``: the credentials alone are masked in free text too."""

_headers: frozenset[str] = STANDARD_HEADERS
_query: frozenset[str] = frozenset()
_lock = threading.Lock()
Bound = tuple[Headers, QueryParams] | None
_serving: contextvars.ContextVar[Bound] = contextvars.ContextVar("backworks_credentials", default=None)


def declare(headers: Iterable[str] = (), query: Iterable[str] = ()) -> None:
    """Treat these header names (any case) and query names as credentials in this process from now on."""
    global _headers, _query
    with _lock:
        _headers = _headers | {name.lower() for name in headers}
        _query = _query | {name.lower() for name in query}


def forget_declared() -> None:
    """Back to the standard headers only (tests)."""
    global _headers, _query
    with _lock:
        _headers, _query = STANDARD_HEADERS, frozenset()


def header_names() -> frozenset[str]:
    """Header names (lower case) treated as credentials in this process."""
    return _headers


def query_names() -> frozenset[str]:
    """Query parameter names (lower case) treated as credentials in this process."""
    return _query


def is_credential_header(name: str) -> bool:
    return name.lower() in _headers


def is_credential_query(name: str) -> bool:
    return name.lower() in _query


def redact_headers(headers: Headers) -> Headers:
    """``headers`` with every credential's value replaced by ``MASK``."""
    return [(name, MASK if name.lower() in _headers else value) for name, value in headers]


def redact_query(query: QueryParams) -> QueryParams:
    """``query`` with every credential's value replaced by ``MASK``."""
    return [(name, MASK if name.lower() in _query else value) for name, value in query]


def carries_credentials(envelope: Envelope) -> bool:
    """True when the request (or the response being built) holds a credential."""
    response = envelope.response.headers if envelope.response else []
    return any(name.lower() in _headers for name, _ in [*envelope.headers, *response]) or any(
        name.lower() in _query for name, _ in envelope.query
    )


def redact_envelope(envelope: Envelope) -> Envelope:
    """A copy of ``envelope`` whose request headers, query and response headers show no credential."""
    redacted = envelope.model_copy(update={"headers": redact_headers(envelope.headers)})
    redacted.query = redact_query(envelope.query)
    if envelope.response is not None:
        redacted.response = envelope.response.model_copy(update={"headers": redact_headers(envelope.response.headers)})
    return redacted


def _parts(name: str, value: str) -> Iterator[str]:
    """The strings of one credential header worth masking in free text."""
    yield value
    if name in SCHEME_HEADERS and " " in value:
        yield value.split(" ", 1)[1].strip()
    elif name == "cookie":
        for pair in value.split(";"):
            yield pair.partition("=")[2].strip()
    elif name == "set-cookie":
        yield value.split(";", 1)[0].partition("=")[2].strip()


def values_in(headers: Iterable[tuple[str, str]], query: Iterable[tuple[str, str]] = ()) -> tuple[str, ...]:
    """The credential strings in these headers and query parameters, longest first, for free-text masking."""
    found = {part for name, value in headers if (low := name.lower()) in _headers for part in _parts(low, value)}
    found.update(value for name, value in query if name.lower() in _query)
    return tuple(sorted((v for v in found if len(v) >= MIN_MASKED_LENGTH), key=len, reverse=True))


def values(envelope: Envelope) -> tuple[str, ...]:
    """The credential strings ``envelope`` carries (request and response), longest first."""
    response = envelope.response.headers if envelope.response else []
    return values_in([*envelope.headers, *response], envelope.query)


def bind(envelope: Envelope) -> contextvars.Token[Bound]:
    """Mask ``envelope``'s request credentials in every log line of the current task (and the tasks it starts).

    A task that serves one message needs no ``unbind``: the binding ends with the task.
    """
    return _serving.set((envelope.headers, envelope.query))


def unbind(token: contextvars.Token[Bound]) -> None:
    _serving.reset(token)


@contextmanager
def serving(envelope: Envelope) -> Iterator[None]:
    """While the block runs, every log line of this task hides ``envelope``'s credentials."""
    token = bind(envelope)
    try:
        yield
    finally:
        unbind(token)


def mask_credentials(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide the credentials of the request being served in every value of a log event."""
    bound = _serving.get()
    if bound is None:
        return event_dict
    found = values_in(*bound)
    if not found:
        return event_dict
    for key, value in event_dict.items():
        event_dict[key] = mask_value(value, found)
    return event_dict
