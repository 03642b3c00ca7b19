"""Shared type aliases."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any JSON-serialisable value."""

Header: TypeAlias = tuple[str, str]
"""One HTTP header as (lower-case name, value); lists of them keep order and repeats."""

Headers: TypeAlias = list[Header]
QueryParams: TypeAlias = list[tuple[str, str]]
