"""The in-process baseline: one Starlette app doing the blueprint's plugin work as middleware.

What a user would otherwise build: each plugin instance of an endpoint's chain is one pure-ASGI
middleware on that endpoint's route (request hook on the way in, response hook on the way out, so
response enhancers run in reverse chain order), and the handler is the route's endpoint. The real
plugin classes run on one ``Envelope`` per request; there is no broker, no serialization, no process hop.
``python -m ops.bench.inprocess --blueprint FILE --port P`` serves it under the gateway's uvicorn settings.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from backworks.contracts.blueprint import handler_instance
from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.contracts.names import Phase
from backworks.local.ports import LOOPBACK
from backworks.pipeline import blueprints
from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance
from backworks.pipeline.executor import dispatch
from backworks.pipeline.plugin import Continue, Fail, Plugin, Respond
from backworks.pipeline.stores import MemoryRuntime
from ops.bench.server import serve

ENVELOPE_KEY = "backworks.envelope"


def failed(reason: str) -> HttpResponse:
    return HttpResponse(status=502, headers=[("content-type", "text/plain")], body=reason.encode())


async def run_hook(plugin: Plugin[Any], phase: Phase, envelope: Envelope, critical: bool) -> Envelope:
    """Apply one hook's action to the envelope (a failing non-critical plugin is skipped)."""
    action = await dispatch(plugin, phase, envelope)
    if isinstance(action, Continue):
        return action.envelope
    if isinstance(action, Respond):
        envelope.response = action.response
    elif isinstance(action, Fail) and critical:
        envelope.response = failed(action.reason)
    return envelope


class EnvelopeMiddleware:
    """Outermost: builds the request's envelope, runs the chain, then writes ``envelope.response``."""

    def __init__(self, app: ASGIApp, route: str) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        client = scope.get("client")
        scope[ENVELOPE_KEY] = Envelope(
            route=self.route,
            method=scope["method"],
            path=scope["path"],
            path_params={k: str(v) for k, v in scope.get("path_params", {}).items()},
            query=parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=b"".join(chunks),
            client=client[0] if client else None,
        )
        await self.app(scope, receive, send)
        result: HttpResponse = scope[ENVELOPE_KEY].response or failed("no response")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers if k != "content-length"]
        headers.append((b"content-length", str(len(result.body)).encode()))
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        await send({"type": "http.response.body", "body": result.body})


class PluginMiddleware:
    """One plugin instance: its request hook before the inner app, its response hook after."""

    def __init__(self, app: ASGIApp, instance: ResolvedInstance, plugin: Plugin[Any]) -> None:
        self.app = app
        self.plugin = plugin
        self.critical = instance.critical
        self.request = Phase.REQUEST in instance.cls.phases
        self.response = Phase.RESPONSE in instance.cls.phases

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.request:
            scope[ENVELOPE_KEY] = await run_hook(self.plugin, Phase.REQUEST, scope[ENVELOPE_KEY], self.critical)
        if scope[ENVELOPE_KEY].response is None:
            await self.app(scope, receive, send)
        if self.response:
            scope[ENVELOPE_KEY] = await run_hook(self.plugin, Phase.RESPONSE, scope[ENVELOPE_KEY], self.critical)


class HandlerEndpoint:
    """The route's endpoint: the endpoint's handler plugin produces ``envelope.response``."""

    def __init__(self, plugin: Plugin[Any]) -> None:
        self.plugin = plugin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        envelope = await run_hook(self.plugin, Phase.REQUEST, scope[ENVELOPE_KEY], critical=True)
        if envelope.response is None:
            envelope.response = failed("handler returned no response")
        scope[ENVELOPE_KEY] = envelope


def build_app(loaded: LoadedBlueprint) -> Starlette:
    """Every endpoint of the blueprint as a route whose chain runs as middleware."""
    plugins = {name: item.cls(item.config, instance=name) for name, item in loaded.instances.items()}
    runtime = MemoryRuntime()  # one process, no broker: KV-backed plugins (rate-limit, cache) keep state in memory
    for plugin in plugins.values():
        plugin.bind(runtime)
    routes = []
    for name, endpoint in loaded.model.endpoints.items():
        chain = [
            Middleware(PluginMiddleware, instance=loaded.instances[item], plugin=plugins[item])
            for item in loaded.model.chain(name)
        ]
        routes.append(
            Route(
                endpoint.path,
                HandlerEndpoint(plugins[handler_instance(name)]),
                methods=endpoint.methods,
                middleware=[Middleware(EnvelopeMiddleware, route=name), *chain],
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for plugin in plugins.values():
            await plugin.startup()
        yield
        for plugin in plugins.values():
            await plugin.shutdown()

    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blueprint", required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build_app(blueprints.load(args.blueprint))
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
