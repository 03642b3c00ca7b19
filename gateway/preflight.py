"""CORS preflights reach the endpoints whose chain answers them, even when ``methods`` does not list OPTIONS.

An endpoint "answers preflights" when its chain has a plugin with the ``cors-preflight`` capability (the built-in
``cors``). For every path such an endpoint serves, one ``OPTIONS`` route goes before the endpoint routes:

- a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) goes to the pipeline of the
  endpoint on that path that serves the requested method and answers preflights, else to any endpoint on the path
  that answers them (whose ``cors`` then refuses the method with 403);
- any other ``OPTIONS`` goes to the endpoint on that path that lists OPTIONS, or is answered 405 with ``Allow``,
  as the router would have answered it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.capabilities import CORS_PREFLIGHT

__all__ = ["answers_preflight", "is_preflight", "preflight_routes"]

Handle = Callable[[Request], Awaitable[Response]]


def answers_preflight(blueprint: LoadedBlueprint, endpoint: str) -> bool:
    """Whether a stage of ``endpoint``'s chain answers CORS preflights."""
    return any(CORS_PREFLIGHT in blueprint.instances[name].cls.capabilities for name in blueprint.chain(endpoint))


def is_preflight(request: Request) -> bool:
    """A CORS preflight: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``."""
    headers = request.headers
    return request.method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


def _serves(methods: list[str], method: str) -> bool:
    return method in methods or (method == "HEAD" and "GET" in methods)


def preflight_routes(blueprint: LoadedBlueprint, handlers: Mapping[str, Handle]) -> list[Route]:
    """The ``OPTIONS`` routes to put before the endpoint routes (``handlers``: endpoint name -> pipeline handle)."""
    endpoints = blueprint.model.endpoints
    paths: dict[str, list[str]] = {}
    for name, endpoint in endpoints.items():
        paths.setdefault(endpoint.path, []).append(name)
    routes: list[Route] = []
    for path, names in paths.items():
        answering = [name for name in names if answers_preflight(blueprint, name)]
        if not answering:
            continue
        own_options = next((name for name in names if "OPTIONS" in endpoints[name].methods), None)
        allowed = sorted({m for name in names for m in endpoints[name].methods} | {"OPTIONS"})

        async def dispatch(
            request: Request,
            answering: list[str] = answering,
            own: str | None = own_options,
            allowed: list[str] = allowed,
        ) -> Response:
            if is_preflight(request):
                wanted = request.headers["access-control-request-method"].strip().upper()
                chosen = next((n for n in answering if _serves(endpoints[n].methods, wanted)), answering[0])
                return await handlers[chosen](request)
            if own is not None:
                return await handlers[own](request)
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(allowed)})

        routes.append(Route(path, dispatch, methods=["OPTIONS"], name=f"preflight:{path}"))
    return routes
