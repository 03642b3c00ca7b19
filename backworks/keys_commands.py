"""``backworks keys``: API key digests for the ``api-key`` plugin (a blueprint stores digests, never keys)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from backworks.console import Format, FormatOption, fail

keys_app = typer.Typer(
    help="API keys for the api-key plugin: print the digest a blueprint stores.", no_args_is_help=True
)
FROM_STDIN = "-"


def read_key(value: str | None) -> str:
    """The key: the argument, or (for ``-`` or none) stdin, asked for without echo on a terminal."""
    if value is not None and value != FROM_STDIN:
        return value
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("API key: ")
    return sys.stdin.read().rstrip("\r\n")


@keys_app.command("hash")
def hash_key(
    value: Annotated[
        str | None,
        typer.Argument(
            help="The API key; `-` or nothing reads it from stdin (hidden prompt on a terminal), out of shell history.",
            show_default=False,
        ),
    ] = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Print the hex SHA-256 digest of an API key, for `keys: [{consumer, sha256}]` of the api-key plugin."""
    from backworks.plugins.api_key import digest

    key = read_key(value)
    if not key:
        raise fail("empty API key: pass it as VALUE, or `-` and write it on stdin")
    hexdigest = digest(key)
    print(json.dumps({"sha256": hexdigest}) if format is Format.JSON else hexdigest)
