"""Allowed origins: exact origins, ``*`` and patterns, compiled once into one anchored matcher.

An entry is ``*`` (any origin), an exact origin (``https://app.example.com``, ``http://localhost:3000``,
``null``), or a pattern where ``*`` stands for a whole part, never for arbitrary text:

- ``https://*.example.com``: any subdomain of example.com, at any depth (``https://a.example.com``,
  ``https://a.b.example.com``), but not ``https://example.com`` itself nor ``https://evil-example.com``;
- ``http://localhost:*``: any port (and none).

Entries are normalised as browsers serialise origins (lower case, no default port, no trailing slash), and
everything but the wildcards is matched literally: an entry cannot smuggle a regular expression in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ANY", "OriginRule", "parse_origin"]

ANY = "*"
DEFAULT_PORTS = {"http": "80", "https": "443"}
_ENTRY = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>(?:\*\.)?(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\]))"
    r"(?::(?P<port>[0-9]{1,5}|\*))?"
)
_LABELS = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\."
"""One or more DNS labels with their dot: what ``*.`` stands for."""


@dataclass(frozen=True)
class OriginRule:
    """One allowed-origin entry, normalised, with its compiled matcher."""

    entry: str
    pattern: re.Pattern[str] | None
    """``None``: the entry is exact (compared as a string)."""

    def matches(self, origin: str) -> bool:
        if self.pattern is None:
            return origin == self.entry
        return self.pattern.fullmatch(origin) is not None


def parse_origin(entry: str) -> OriginRule:
    """The rule for one ``allow_origins`` entry; ``ValueError`` saying what is accepted when it is not valid."""
    text = entry.strip().lower().rstrip("/")
    if text == "null":
        return OriginRule("null", None)
    match = _ENTRY.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{entry!r} is not an origin: write scheme://host[:port] (https://app.example.com), with `*` only as "
            "the first label of the host (https://*.example.com) or as the port (http://localhost:*), or `*` alone"
        )
    scheme, host, port = match.group("scheme"), match.group("host"), match.group("port")
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    exact = f"{scheme}://{host}" + (f":{port}" if port else "")
    if "*" not in exact:
        return OriginRule(exact, None)
    regex = re.escape(f"{scheme}://")
    regex += (_LABELS + re.escape(host[2:])) if host.startswith("*.") else re.escape(host)
    if port == ANY:
        regex += r"(?::[0-9]{1,5})?"
    elif port:
        regex += re.escape(f":{port}")
    return OriginRule(exact, re.compile(regex))
