"""``cors``: Cross-Origin Resource Sharing per the Fetch standard, preflights answered by the plugin itself.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered in the request phase,
so no later stage and never the handler sees it: 204 with the ``Access-Control-Allow-*`` headers when the origin,
the method and every requested header are allowed, else 403 problem+json without any of them (the browser then
blocks the real request). Any other request goes on; on the way back its response gets
``Access-Control-Allow-Origin`` (and ``-Credentials``, ``-Expose-Headers``) when its origin is allowed, none when
not (the browser keeps the response from the page), and always ``Vary: Origin``, since the answer depends on it.

The gateway routes preflights to every endpoint whose chain has ``cors`` (capability ``cors-preflight``), even when
``methods`` does not list OPTIONS, and blueprint validation requires ``cors`` to be the first stage of such a chain.
"""

from __future__ import annotations

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.capabilities import CORS_PREFLIGHT
from backworks.pipeline.plugin import Action, Continue, RequestProcessor, Respond
from backworks.pipeline.problems import problem
from backworks.plugins.cors.config import CorsConfig
from backworks.plugins.cors.origins import ANY, OriginRule, parse_origin

PRIORITY = 1000
"""Runs before plugins the blueprint leaves unordered: a preflight carries no credentials."""
ALLOW_ORIGIN = "access-control-allow-origin"
ALLOW_CREDENTIALS = "access-control-allow-credentials"
ALLOW_METHODS = "access-control-allow-methods"
ALLOW_HEADERS = "access-control-allow-headers"
EXPOSE_HEADERS = "access-control-expose-headers"
MAX_AGE = "access-control-max-age"
REQUEST_METHOD = "access-control-request-method"
REQUEST_HEADERS = "access-control-request-headers"
OWN_RESPONSE_HEADERS = (ALLOW_ORIGIN, ALLOW_CREDENTIALS, EXPOSE_HEADERS)
"""What ``cors`` decides on an actual response, whatever the handler set."""


def is_preflight(envelope: Envelope) -> bool:
    """A CORS preflight: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``."""
    return (
        envelope.method == "OPTIONS"
        and envelope.header("origin") is not None
        and envelope.header(REQUEST_METHOD) is not None
    )


def add_vary(response: HttpResponse, *names: str) -> None:
    """Add ``names`` to the response's ``Vary`` header (once each; ``Vary: *`` already covers everything)."""
    current = response.header("vary")
    tokens = [t.strip() for t in current.split(",") if t.strip()] if current else []
    if "*" in tokens:
        return
    known = {t.lower() for t in tokens}
    tokens.extend(name for name in names if name.lower() not in known)
    response.set_header("vary", ", ".join(tokens))


class Cors(RequestProcessor[CorsConfig]):
    """Answers CORS preflights (204 or 403 problem+json) and adds CORS headers to actual responses.

    Must be the first stage of its endpoints (``backworks validate`` says so otherwise): preflights carry no
    credentials, so an authentication stage before it would refuse them.
    """

    name = "cors"
    version = "1.0.0"
    description = "Cross-origin resource sharing (Fetch standard): answers preflights, adds CORS response headers."
    capabilities = (CORS_PREFLIGHT,)
    priority = PRIORITY
    is_critical = True  # skipped, a preflight would go on to the handler
    Config = CorsConfig

    def __init__(self, config: CorsConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self.any_origin = ANY in config.allow_origins
        self.rules: tuple[OriginRule, ...] = tuple(parse_origin(o) for o in config.allow_origins if o != ANY)
        self.any_method = ANY in config.allow_methods
        self.methods = frozenset(config.allow_methods)
        self.any_header = ANY in config.allow_headers
        self.headers = frozenset(config.allow_headers)
        self.annotation = f"cors:{instance}"

    def allow_origin(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or ``None`` when it is not allowed."""
        if self.any_origin:
            return origin if self.config.allow_credentials else ANY
        normalised = origin.strip().lower()
        return origin if any(rule.matches(normalised) for rule in self.rules) else None

    async def process_request(self, envelope: Envelope) -> Action:
        origin = envelope.header("origin")
        if origin is not None and is_preflight(envelope):
            return Respond(self.preflight(envelope, origin))
        # Decided now, on the request as it came: a later stage may rewrite the request's headers.
        envelope.annotations[self.annotation] = self.allow_origin(origin) if origin is not None else None
        return Continue(envelope)

    def preflight(self, envelope: Envelope, origin: str) -> HttpResponse:
        """The answer to a preflight: 204 with the ``Access-Control-Allow-*`` headers, or 403 problem+json."""
        vary = ("origin", REQUEST_METHOD, REQUEST_HEADERS)
        allowed = self.allow_origin(origin)
        method = (envelope.header(REQUEST_METHOD) or "").strip()
        requested = [h.strip().lower() for h in (envelope.header(REQUEST_HEADERS) or "").split(",") if h.strip()]
        refusal: str | None = None
        if allowed is None:
            refusal = f"origin {origin!r} is not allowed to call this API from a browser"
        elif not self.any_method and method.upper() not in self.methods:
            refusal = f"method {method!r} is not allowed cross-origin; allowed: {', '.join(sorted(self.methods))}"
        elif not self.any_header and (denied := [h for h in requested if h not in self.headers]):
            listed = ", ".join(sorted(self.headers)) or "none"
            refusal = f"request header(s) {', '.join(denied)} not allowed cross-origin; allowed: {listed}"
        if refusal is not None or allowed is None:
            response = problem(403, "CORS preflight refused", refusal or "")
            add_vary(response, *vary)
            return response
        response = HttpResponse(status=204)
        response.set_header(ALLOW_ORIGIN, allowed)
        if self.config.allow_credentials:
            response.set_header(ALLOW_CREDENTIALS, "true")
        response.set_header(ALLOW_METHODS, method if self.any_method else ", ".join(self.config.allow_methods))
        if requested:
            response.set_header(ALLOW_HEADERS, ", ".join(requested if self.any_header else self.config.allow_headers))
        if self.config.max_age_s is not None:
            response.set_header(MAX_AGE, str(self.config.max_age_s))
        add_vary(response, *vary)
        return response

    async def process_response(self, envelope: Envelope) -> Action:
        response = envelope.response
        if response is None or is_preflight(envelope):  # a preflight was answered in the request phase
            return Continue(envelope)
        if self.annotation in envelope.annotations:
            allowed = envelope.annotations[self.annotation]
        else:  # answered before this stage ran (it should be first): decide from the request
            origin = envelope.header("origin")
            allowed = self.allow_origin(origin) if origin is not None else None
        response.headers = [(k, v) for k, v in response.headers if k not in OWN_RESPONSE_HEADERS]
        add_vary(response, "origin")
        if allowed is not None:
            response.set_header(ALLOW_ORIGIN, str(allowed))
            if self.config.allow_credentials:
                response.set_header(ALLOW_CREDENTIALS, "true")
            if self.config.expose_headers:
                response.set_header(EXPOSE_HEADERS, ", ".join(self.config.expose_headers))
        return Continue(envelope)
