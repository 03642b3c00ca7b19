"""GatewayApp serves endpoint routes without Starlette's middleware layers, with the same answers and errors."""

from __future__ import annotations

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from backworks.gateway.fastpath import EndpointRoute, GatewayApp


async def crash(request: Request, exc: Exception) -> Response:
    return JSONResponse({"crashed": type(exc).__name__}, status_code=500)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"status": exc.status_code}, status_code=exc.status_code)


async def hello(request: Request) -> Response:
    # ExceptionMiddleware puts its handlers in the scope: absent, the request skipped Starlette's layers.
    layers = "stack" if "starlette.exception_handlers" in request.scope else "direct"
    return PlainTextResponse(f"hello {request.path_params['name']} {layers} {type(request.scope['route']).__name__}")


async def broken(request: Request) -> Response:
    raise RuntimeError("boom")


async def teapot(request: Request) -> Response:
    raise HTTPException(418)


async def fixed(request: Request) -> Response:
    return PlainTextResponse("fixed")


def app(middleware: list[Middleware] | None = None) -> GatewayApp:
    return GatewayApp(
        routes=[
            Route("/hello/fixed", fixed, methods=["GET"]),  # first: it wins over the endpoint's pattern
            EndpointRoute("/hello/{name}", hello, methods=["GET"], name="hello"),
            EndpointRoute("/broken", broken, methods=["GET"], name="broken"),
            EndpointRoute("/teapot", teapot, methods=["GET"], name="teapot"),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: crash},
    )


def client(asgi: ASGIApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_endpoints_routing_and_errors_answer_as_through_the_whole_stack() -> None:
    async with client(app()) as http:
        assert (await http.get("/hello/ada")).text == "hello ada direct EndpointRoute"
        assert (await http.get("/hello/fixed")).text == "fixed"  # route order kept
        assert (await http.post("/hello/ada")).json() == {"status": 405}  # partial match: Starlette's 405
        assert (await http.get("/nowhere")).json() == {"status": 404}
        assert (await http.get("/teapot")).json() == {"status": 418}
        crashed = await http.get("/broken")
        assert (crashed.status_code, crashed.json()) == (500, {"crashed": "RuntimeError"})


async def test_an_exception_is_raised_again_for_the_server_to_log() -> None:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with pytest.raises(RuntimeError, match="boom"):
            await http.get("/broken")


async def test_user_middleware_still_sees_endpoint_requests() -> None:
    seen: list[str] = []

    class Spy:
        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.inner(scope, receive, send)

    async with client(app([Middleware(Spy)])) as http:
        assert (await http.get("/hello/bob")).text == "hello bob stack EndpointRoute"
    assert seen == ["/hello/bob"]


async def test_routes_replaced_by_a_new_revision_are_matched_in_their_new_order() -> None:
    served = app()
    async with client(served) as http:
        assert (await http.get("/hello/ada")).text == "hello ada direct EndpointRoute"
        served.router.routes = [Route("/hello/ada", fixed, methods=["GET"]), *served.router.routes]
        assert (await http.get("/hello/ada")).text == "fixed"
        assert (await http.get("/hello/bob")).text == "hello bob direct EndpointRoute"
        served.router.routes = served.router.routes[1:]
        assert (await http.get("/hello/ada")).text == "hello ada direct EndpointRoute"


async def test_a_root_path_is_taken_off_before_routes_match() -> None:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/api/hello/fixed")).text == "fixed"
        assert (await http.get("/api/hello/ada")).text == "hello ada direct EndpointRoute"
