"""The gateway's Starlette application: one route per blueprint endpoint, the health route, error handlers.

The concepts live in their own modules: ``state`` (what the gateway holds, connect/disconnect), ``endpoint``
(request -> envelope -> reply -> response), ``health`` (the report for load balancers), ``problems``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from backworks import __version__
from backworks.contracts.types import FailureKind
from backworks.gateway.dashboard import dashboard_routes
from backworks.gateway.endpoint import Pipeline, request_id_of
from backworks.gateway.errors import ProblemError
from backworks.gateway.fastpath import EndpointRoute, GatewayApp
from backworks.gateway.health import HEALTH_PATH, health_report
from backworks.gateway.metrics import CONTENT_TYPE, METRICS_PATH, GatewayMetrics
from backworks.gateway.openapi import OPENAPI_PATH
from backworks.gateway.openapi import build as build_openapi
from backworks.gateway.preflight import preflight_routes
from backworks.gateway.problems import problem_response
from backworks.gateway.state import GatewayState, connect, disconnect
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.lifecycle import freeze_startup_objects
from backworks.tap.filters import FilterError, seconds
from backworks.tap.reports import AnalyticsUnavailable, ask

__all__ = ["HEALTH_PATH", "GatewayState", "build_app"]

log = structlog.get_logger("backworks.gateway")

REPORT_PATH = "/_backworks/report"
DEFAULT_REPORT_WINDOW = "15m"


def build_app(state: GatewayState) -> Starlette:
    """The Starlette app for a loaded blueprint."""
    gauges = state.metrics = GatewayMetrics(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await connect(state)
        freeze_startup_objects()
        log.info("gateway ready", gateway=state.gateway_id, blueprint=state.blueprint.model.name)
        try:
            yield
        finally:
            await disconnect(state)

    async def health(request: Request) -> Response:
        body, status = health_report(state)
        return JSONResponse(body, status_code=status)

    async def metrics(request: Request) -> Response:
        return Response(await gauges.render(), media_type=CONTENT_TYPE)

    async def report(request: Request) -> Response:
        """The analytics service's aggregates (``?since=15m``), asked over NATS: 503 when none answers."""
        client = state.client
        try:
            since = seconds(request.query_params.get("since", DEFAULT_REPORT_WINDOW))
            if client is None or not client.is_connected:
                raise AnalyticsUnavailable("the message broker (NATS) is not reachable")
            return JSONResponse(await ask(client, since))
        except FilterError as exc:
            problem = ProblemError(400, "Bad report window", str(exc))
        except AnalyticsUnavailable as exc:
            problem = ProblemError(503, "Report unavailable", str(exc))
        return problem_response(problem, instance=request.url.path, request_id=request_id_of(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        problem = ProblemError(exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail))
        return problem_response(problem, instance=request.url.path, request_id=request_id_of(request),
                                headers=exc.headers)  # fmt: skip

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled gateway error", path=request.url.path)
        problem = ProblemError(
            500, "Internal error", f"the gateway failed: {type(exc).__name__}", cause=FailureKind.GATEWAY
        )
        return problem_response(problem, instance=request.url.path, request_id=request_id_of(request))

    document: dict[str, object] = {}

    async def openapi(request: Request) -> Response:
        if not document:  # built on first use: most gateways are never asked
            document.update(build_openapi(state.blueprint, __version__))
        return JSONResponse(document)

    fixed = [
        Route(HEALTH_PATH, health, methods=["GET"]),
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route(REPORT_PATH, report, methods=["GET"]),
        Route(METRICS_PATH, metrics, methods=["GET"]),
        *dashboard_routes(state),
    ]
    app = GatewayApp(
        routes=[*fixed, *endpoint_routes(state, state.blueprint, state.revision)],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: crash},
    )

    def switch(loaded: LoadedBlueprint, revision: int) -> None:
        # One assignment: a request is matched against the old table or the new one, never a mix of both.
        app.router.routes = [*fixed, *endpoint_routes(state, loaded, revision)]
        document.clear()

    state.on_switch = switch
    return app


def endpoint_routes(state: GatewayState, loaded: LoadedBlueprint, revision: int | None) -> list[BaseRoute]:
    """The routes of ``loaded``'s endpoints, each stamping ``revision`` on its envelopes."""
    handlers: dict[str, Callable[[Request], Awaitable[Response]]] = {
        name: Pipeline(state, name, loaded, revision).handle for name in loaded.model.endpoints
    }
    # CORS preflights go to endpoints whose chain answers them, whatever their `methods` (see ``preflight``).
    routes: list[BaseRoute] = list(preflight_routes(loaded, handlers))
    for name, endpoint in loaded.model.endpoints.items():
        routes.append(EndpointRoute(endpoint.path, handlers[name], methods=endpoint.methods, name=name))
    return routes
