"""Request templating for plugin configs: ``{path.x}``, ``{query.x}``, ``{header.x}`` and ``{principal.consumer}``.

One renderer for every plugin that builds values from the request (``mock`` bodies and headers, ``transform``
values), so a placeholder means the same thing everywhere. A placeholder whose value is absent renders as the
empty string; text that is not a placeholder (``{"a": 1}``, ``{x}``) is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

from backworks.contracts.envelope import Envelope

__all__ = ["PLACEHOLDER", "SOURCES", "render", "render_value"]

PLACEHOLDER = re.compile(r"\{(path|query|header)\.([A-Za-z0-9_.-]+)\}|\{principal\.(consumer)\}")
SOURCES = ("{path.NAME}", "{query.NAME}", "{header.NAME}", "{principal.consumer}")
"""The placeholders a template may use, as documentation shows them."""


def _lookup(envelope: Envelope, match: re.Match[str]) -> str:
    source, key, principal = match.groups()
    if principal is not None:
        return envelope.principal.consumer if envelope.principal is not None else ""
    if source == "path":
        return envelope.path_params.get(key, "")
    if source == "query":
        return envelope.query_param(key) or ""
    return envelope.header(key) or ""


def render(template: str, envelope: Envelope) -> str:
    """``template`` with every placeholder replaced by the request's value (empty when absent)."""
    if "{" not in template:
        return template
    return PLACEHOLDER.sub(lambda match: _lookup(envelope, match), template)


def render_value(value: Any, envelope: Envelope) -> Any:
    """A JSON value with every string in it (object keys included) rendered; other values unchanged."""
    if isinstance(value, str):
        return render(value, envelope)
    if isinstance(value, list):
        return [render_value(item, envelope) for item in value]
    if isinstance(value, dict):
        return {render(str(k), envelope): render_value(v, envelope) for k, v in value.items()}
    return value
