"""The live dashboard at ``/_backworks/``: one HTML page, its script and its style sheet, and the stages' view.

The page is static (package data, no CDN: it works on a machine without internet); its script polls the report
API (``/_backworks/report``: routes and the last requests, from the analytics service) and ``STAGES_PATH`` (what
the gateway itself knows: live replicas, breakers, each stage's pending messages) and renders them with the DOM's
``textContent`` only, so nothing a client sent (a path) can become markup. The routes are as open as
``/_backworks/report`` and ``/_backworks/metrics`` (the gateway binds 127.0.0.1 unless told otherwise); the page
holds no credential and shows none.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from backworks.contracts.breakers import BreakerState
from backworks.gateway.health import health_report
from backworks.gateway.state import GatewayState

DASHBOARD_PATH = "/_backworks/"
STAGES_PATH = "/_backworks/dashboard/stages"
ASSETS = "dashboard_assets"
PAGE = "index.html"
STATIC = {
    "/_backworks/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/_backworks/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this gateway's own script, style sheet and JSON: no inline script or style, no other origin."""
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
ASSET_CACHE = "no-cache"
"""Revalidated on every load: a new Backworks version's page never runs with an old script."""
DATA_CACHE = "no-store"


def asset(name: str) -> bytes:
    """One of the dashboard's files, read from the installed package."""
    return resources.files("backworks.gateway").joinpath(ASSETS, name).read_bytes()


def stages_view(state: GatewayState, pending: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    """Per stage: its instance, plugin, criticality, status, live replicas, breaker state and pending messages.

    ``pending`` maps a stage label to JetStream's (pending, ack pending, redelivered) for its durable, as read for
    ``/_backworks/metrics``; a stage missing from it (JetStream did not answer in time) shows ``None``.
    """
    health, _ = health_report(state)
    model = state.blueprint.model
    stages = []
    for label, stage in health["stages"].items():
        waiting, unacked, _again = pending.get(label, (None, None, None))
        stages.append(
            {
                "stage": label,
                "instance": stage["instance"],
                "plugin": stage["plugin"],
                "phase": stage["phase"],
                "critical": stage["critical"],
                "status": stage["status"],
                "live_replicas": stage["live_replicas"],
                "breaker": str(stage["breaker"].get("state", BreakerState.CLOSED.value)),
                "pending": waiting,
                "ack_pending": unacked,
            }
        )
    return {
        "status": health["status"],
        "blueprint": health["blueprint"],
        "gateway": health["gateway"],
        "nats_connected": bool(health["nats"].get("connected")),
        "events": {"enabled": model.events.enabled, "stage_completed": model.events.stage_completed},
        "stages": stages,
    }


def dashboard_routes(state: GatewayState) -> list[BaseRoute]:
    """The page, its script and style sheet (read once, at start: a broken install fails loudly) and the stages'
    JSON."""

    def static(path: str, name: str, media_type: str) -> Route:
        body = asset(name)
        headers = {**SECURITY_HEADERS, "cache-control": ASSET_CACHE}

        async def serve(request: Request) -> Response:
            return Response(body, media_type=media_type, headers=headers)

        return Route(path, serve, methods=["GET"])

    async def stages(request: Request) -> Response:
        pending: dict[str, tuple[int, int, int]] = {}
        if state.backpressure is not None:  # the gateway's 2 s poll of each stage's durable: no JetStream call here
            pending = {label: (load.pending, load.ack_pending, load.redelivered)
                       for label, load in state.backpressure.loads.items()}  # fmt: skip
        return JSONResponse(stages_view(state, pending), headers={**SECURITY_HEADERS, "cache-control": DATA_CACHE})

    files = {DASHBOARD_PATH: (PAGE, "text/html; charset=utf-8"), **STATIC}
    routes: list[BaseRoute] = [static(path, name, media_type) for path, (name, media_type) in files.items()]
    routes.append(Route(STAGES_PATH, stages, methods=["GET"]))
    return routes
