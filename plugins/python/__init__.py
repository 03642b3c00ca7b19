"""``python``: calls a function of yours with each request (``function: "notes_app:create_note"``).

Write the function against the public types re-exported here::

    from backworks.plugins.python import HTTPError, Request, Response

    def get_note(request: Request) -> dict:
        note = NOTES.get(int(request.path_params["id"]))
        if note is None:
            raise HTTPError(404, f"no note {request.path_params['id']}")
        return note
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import structlog

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Action, Continue, Handler, Health, HealthStatus, Respond
from backworks.pipeline.problems import problem
from backworks.plugins.python import modules
from backworks.plugins.python.config import PythonConfig
from backworks.plugins.python.loader import Target, load_target
from backworks.plugins.python.request import Headers, Principal, Request
from backworks.plugins.python.response import HTTPError, Response, UnsupportedResult, to_http_response

__all__ = ["HTTPError", "Headers", "Principal", "Python", "Request", "Response"]

log = structlog.get_logger("backworks.plugins.python")

DEFAULT_MAX_EXECUTION_TIME = 1.0
"""Seconds a call may take unless the instance sets ``timeout_ms``: more than a mock, since functions do real work."""


class Python(Handler[PythonConfig]):
    """Calls a Python function of yours with each request and answers with what it returns.

    The function gets a ``Request`` (method, path, path_params, query, query_list, headers, body, json(),
    principal, request_id) and returns a dict or list (200 JSON), ``(status, body)``, ``(status, body, headers)``
    or a ``Response``; ``raise HTTPError(404, "...")`` answers with a problem document. Any other exception is a
    500 problem naming the stage, with no exception text sent to the client (it is logged with the request id).
    """

    name = "python"
    version = "1.0.0"
    description = "Calls a Python function (sync in a thread pool, or async) with each request."
    capabilities = ("respond.code",)
    Config = PythonConfig
    max_execution_time = DEFAULT_MAX_EXECUTION_TIME

    def __init__(self, config: PythonConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self.target: Target | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.calls = 0
        self.errors = 0

    async def startup(self) -> None:
        """Import the function, start the thread pool, run the module's ``startup()`` (first user in the process)."""
        target = load_target(self.config.function, self.config.folders)
        await modules.acquire(target.module)
        if not target.is_async:
            # Lazy: importing the stage host at module level would load nats-py into `backworks validate`.
            from backworks.pipeline.stagehost import DEFAULT_MAX_INFLIGHT

            workers = self.config.max_concurrent or DEFAULT_MAX_INFLIGHT
            self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"backworks-{self.instance}")
        self.target = target

    async def shutdown(self) -> None:
        """Run the module's ``shutdown()`` (last user in the process) and stop the thread pool."""
        target, self.target = self.target, None
        try:
            if target is not None:
                await modules.release(target.module)
        finally:
            if self.pool is not None:
                # Threads still running a call that overran its limit cannot be interrupted: do not wait for them.
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None

    async def health_check(self) -> Health:
        if self.target is None:
            return Health(HealthStatus.UNHEALTHY, "not started")
        return Health()

    async def get_metrics(self) -> dict[str, float]:
        return {"calls": float(self.calls), "errors": float(self.errors)}

    async def _call(self, target: Target, request: Request) -> Any:
        if target.is_async:
            result = await target.function(request)
        else:
            loop = asyncio.get_running_loop()
            # The thread sees this task's context: logs from the function carry the request id.
            call = functools.partial(contextvars.copy_context().run, target.function, request)
            result = await loop.run_in_executor(self.pool, call)
        if inspect.isawaitable(result):  # a sync callable that hands back a coroutine (a partial of an async def)
            result = await result
        return result

    async def handle(self, envelope: Envelope) -> Action:
        target = self.target
        if target is None:
            raise RuntimeError(f"python handler {self.instance} is not started")
        stage = envelope.current.label if envelope.current is not None else self.instance
        self.calls += 1
        try:
            envelope.response = to_http_response(await self._call(target, Request.from_envelope(envelope)))
        except HTTPError as exc:
            title = exc.title or _reason(exc.status)
            return Respond(problem(exc.status, title, exc.detail, stage=stage, request_id=envelope.request_id))
        except Exception as exc:
            self.errors += 1
            what = "returned an unsupported value" if isinstance(exc, UnsupportedResult) else "raised"
            log.error(f"handler function {what}", instance=self.instance, function=target.spec, exc_info=exc)
            detail = (
                f"the handler function of stage {stage} failed; its log has the details (request {envelope.request_id})"
            )
            return Respond(problem(500, "Internal Server Error", detail, stage=stage, request_id=envelope.request_id))
        return Continue(envelope)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
