"""RFC 6901 JSON pointers, and the three edits ``transform`` makes with them: set, remove, rename.

``set`` creates missing intermediate objects (``/meta/source`` on ``{}`` gives ``{"meta": {"source": ...}}``);
in an array, an index replaces an item and ``-`` appends. ``remove`` and ``rename`` of something absent do
nothing, so a transform can be applied to bodies of every shape. Walking into a value that is neither an object
nor an array (``/name/first`` when ``name`` is a string) is a ``PointerError`` saying where.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PointerError", "check_pointer", "remove", "rename", "set_value", "tokens"]

APPEND = "-"


class PointerError(ValueError):
    """A pointer cannot be applied to this document."""


def check_pointer(pointer: str) -> str:
    """``pointer`` when it is a valid RFC 6901 pointer to something inside a document; ``ValueError`` otherwise."""
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer: it must start with '/' (RFC 6901), such as /user/name")
    rest = pointer.replace("~0", "").replace("~1", "")
    if "~" in rest:
        raise ValueError(f"{pointer!r} has a '~' not followed by 0 or 1: write '~' as ~0 and '/' as ~1 (RFC 6901)")
    return pointer


def tokens(pointer: str) -> list[str]:
    """The reference tokens of ``pointer``, unescaped (``~1`` is ``/``, then ``~0`` is ``~``)."""
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _index(container: list[Any], token: str, pointer: str, *, appending: bool) -> int:
    if appending and token == APPEND:
        return len(container)
    if token.isdigit() and (len(token) == 1 or not token.startswith("0")):  # RFC 6901: no leading zeros
        return int(token)
    raise PointerError(f"{pointer}: {token!r} is not an array index")


def _parent(document: Any, parts: list[str], pointer: str, *, create: bool) -> Any:
    """The container holding the last token of ``parts`` (``None`` when absent and not created)."""
    node = document
    for depth, token in enumerate(parts[:-1]):
        if isinstance(node, dict):
            if token not in node:
                if not create:
                    return None
                node[token] = {}
            node = node[token]
        elif isinstance(node, list):
            index = _index(node, token, pointer, appending=False)
            if index >= len(node):
                if not create:
                    return None
                raise PointerError(f"{pointer}: index {token} is past the end of the array")
            node = node[index]
        else:
            at = "/".join(parts[:depth])
            raise PointerError(f"{pointer}: /{at} is {_kind(node)}, not an object or array")
    if not isinstance(node, (dict, list)):
        if not create:
            return None
        at = "/".join(parts[:-1])
        raise PointerError(f"{pointer}: /{at} is {_kind(node)}, not an object or array")
    return node


def _kind(value: Any) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def set_value(document: Any, pointer: str, value: Any) -> None:
    """Set ``value`` at ``pointer`` in ``document`` (an object or array), creating missing objects on the way."""
    parts = tokens(pointer)
    parent = _parent(document, parts, pointer, create=True)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
        return
    index = _index(parent, last, pointer, appending=True)
    if index == len(parent):
        parent.append(value)
    elif index < len(parent):
        parent[index] = value
    else:
        raise PointerError(f"{pointer}: index {last} is past the end of the array (use - to append)")


def remove(document: Any, pointer: str) -> Any:
    """Remove and return what is at ``pointer`` (``None`` and no change when nothing is there)."""
    parts = tokens(pointer)
    parent = _parent(document, parts, pointer, create=False)
    last = parts[-1]
    if isinstance(parent, dict):
        return parent.pop(last, None)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    return None


def _present(document: Any, pointer: str) -> bool:
    parts = tokens(pointer)
    parent = _parent(document, parts, pointer, create=False)
    last = parts[-1]
    if isinstance(parent, dict):
        return last in parent
    return isinstance(parent, list) and last.isdigit() and int(last) < len(parent)


def rename(document: Any, source: str, target: str) -> None:
    """Move what is at ``source`` to ``target`` (nothing happens when ``source`` is absent)."""
    if not _present(document, source):
        return
    set_value(document, target, remove(document, source))
