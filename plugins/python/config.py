from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from backworks.pipeline.configs import ConfigContext
from backworks.plugins.python.loader import FUNCTION_PATTERN, FunctionNotUsable, load_target


class PythonConfig(BaseModel):
    """Calls a Python function of yours: ``function: "notes_app:create_note"``.

    The module is looked up next to the blueprint, then in its ``plugin_dirs``, then in the installed packages; it
    is imported when the blueprint is validated, so a missing module or function, or a function that does not take
    exactly one parameter, is reported by ``backworks validate`` with the blueprint's file and line.

    The function may be ``def`` (run in a thread pool as large as the instance's ``limits.max_concurrent``, 64 by
    default) or ``async def`` (run on the stage's event loop). Either runs under the instance's time limit
    (``timeout_ms`` of the handler, 1000 ms by default; overrun: 504). The module may define ``startup()`` and
    ``shutdown()`` (sync or async): called once per process before the first request and after the last.
    """

    model_config = ConfigDict(extra="forbid")

    function: str = Field(
        pattern=FUNCTION_PATTERN,
        description="`module:function` to call with each request, e.g. `notes_app:create_note`.",
    )
    _folders: tuple[Path, ...] = PrivateAttr(default=())
    _max_concurrent: int | None = PrivateAttr(default=None)

    @property
    def folders(self) -> tuple[Path, ...]:
        """Where the module is looked up before the installed packages: the blueprint's folder and plugin_dirs."""
        return self._folders

    @property
    def max_concurrent(self) -> int | None:
        """The instance's ``limits.max_concurrent``, when the config came from a blueprint that sets it."""
        return self._max_concurrent

    @field_validator("function")
    @classmethod
    def _function_is_usable(cls, value: str, info: ValidationInfo) -> str:
        try:
            load_target(value, _folders(info))
        except FunctionNotUsable as exc:
            raise PydanticCustomError("python_function", "{message}", {"message": str(exc)}) from None
        return value

    @model_validator(mode="after")
    def _remember_context(self, info: ValidationInfo) -> PythonConfig:
        self._folders = _folders(info)
        if isinstance(info.context, ConfigContext):
            self._max_concurrent = info.context.max_concurrent
        return self


def _folders(info: ValidationInfo) -> tuple[Path, ...]:
    """The blueprint's folder and plugin_dirs; the working directory for a config made outside a blueprint."""
    context = info.context
    if isinstance(context, ConfigContext):
        return tuple(dict.fromkeys((context.blueprint_dir, *context.plugin_dirs)))
    return (Path.cwd(),)
