"""The gateway's Starlette app with a direct path to its blueprint endpoints.

A request to an endpoint used to pass through Starlette's whole stack: ``ServerErrorMiddleware``,
``ExceptionMiddleware``, the router, the route and ``request_response``, where two of the layers wrap ``send``
again and each adds a coroutine to every message (py-spy, gateway at 64 in flight: ~10 % of its samples were
these layers, besides the endpoint's own work). ``GatewayApp`` matches the routes itself, in the router's order,
and when the first full match is an endpoint's route (``EndpointRoute``) it runs the endpoint's handler directly,
with the error handling the stack would apply to what the handler raises: an ``HTTPException`` goes to the app's
handler for it, any other exception to the app's ``Exception`` handler (its 500 problem document sent) and is
raised again for uvicorn to log, as ``ServerErrorMiddleware`` does. (An exception while the response itself is
being sent is raised to uvicorn without a 500: the endpoints' responses are plain ``Response`` objects, and a
500 after the head went out would be no valid answer anyway.) Everything else (health, metrics, the dashboard, CORS
preflights, 404 and 405 answers, lifespan) goes through Starlette unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Any]


class EndpointRoute(Route):
    """The route of one blueprint endpoint: ``GatewayApp`` serves it without Starlette's middleware layers."""

    def __init__(self, path: str, handler: Handler, *, methods: list[str], name: str) -> None:
        super().__init__(path, handler, methods=methods, name=name)
        self.handler = handler


class GatewayApp(Starlette):
    """Starlette, with requests to ``EndpointRoute`` routes served directly (see the module docstring)."""

    _literals: tuple[list[BaseRoute], list[tuple[BaseRoute, str | None]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.max_body_size is None and not self.user_middleware:
            path = scope["path"] if not scope.get("root_path") else None
            for route, literal in self._routes():
                # A route without parameters (health, metrics, the dashboard's files…) matches only its own path:
                # not asking its regex spares ~0.7 µs per route on every request (``$`` also matches before a
                # final newline, hence the second comparison).
                if literal is not None and path is not None and path != literal and path != literal + "\n":
                    continue
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    if isinstance(route, EndpointRoute):
                        scope["app"] = self
                        scope["router"] = self.router
                        scope["route"] = route
                        scope.update(child_scope)
                        await self._serve(route, scope, receive, send)
                        return
                    break  # another route serves it: through the whole stack, as before
        await super().__call__(scope, receive, send)

    def _routes(self) -> list[tuple[BaseRoute, str | None]]:
        """The router's routes, each with its literal path when it has no parameters; built again when the
        routes are replaced (a new blueprint revision)."""
        routes = self.router.routes
        known = self._literals
        if known is None or known[0] is not routes or len(known[1]) != len(routes):
            known = self._literals = (routes, [(route, _literal(route)) for route in routes])
        return known[1]

    async def _serve(self, route: EndpointRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.handler(request)
        except HTTPException as exc:
            response = await self._handled(HTTPException, request, exc)
        except Exception as exc:
            await (await self._handled(Exception, request, exc))(scope, receive, send)
            raise  # as ServerErrorMiddleware does: the server logs it
        await response(scope, receive, send)

    async def _handled(self, kind: type[Exception], request: Request, exc: Exception) -> Response:
        handler: ErrorHandler | None = self.exception_handlers.get(kind)
        if handler is None:
            raise exc
        response: Response = await handler(request, exc)
        return response


def _literal(route: BaseRoute) -> str | None:
    """The one path ``route`` matches, when it is a plain ``Route`` without parameters."""
    if isinstance(route, Route) and type(route) in (Route, EndpointRoute) and not route.param_convertors:
        return route.path
    return None
