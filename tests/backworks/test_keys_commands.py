"""``backworks keys hash``: the digest an api-key blueprint stores, from an argument or stdin, quick to run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from typer.testing import CliRunner

from backworks.cli import app
from tests.backworks.test_cli import HEAVY, IMPORTED_BY

runner = CliRunner()
KEY = "alice-key-0123456789"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


def test_hash_prints_the_hex_sha256_of_the_argument() -> None:
    result = runner.invoke(app, ["keys", "hash", KEY])
    assert result.exit_code == 0, result.output
    assert result.stdout == DIGEST + "\n" and result.stderr == ""


def test_dash_reads_the_key_from_stdin_without_its_newline() -> None:
    for stdin in (KEY, KEY + "\n", KEY + "\r\n"):
        assert runner.invoke(app, ["keys", "hash", "-"], input=stdin).stdout.strip() == DIGEST
    assert runner.invoke(app, ["keys", "hash"], input=KEY + "\n").stdout.strip() == DIGEST, "no VALUE: stdin"


def test_json_format_and_empty_keys() -> None:
    result = runner.invoke(app, ["keys", "hash", KEY, "--format", "json"])
    assert json.loads(result.stdout) == {"sha256": DIGEST}
    empty = runner.invoke(app, ["keys", "hash", "-"], input="\n")
    assert empty.exit_code == 1 and "empty API key" in empty.stderr and empty.stdout == ""


def test_the_digest_is_what_the_api_key_plugin_matches() -> None:
    from backworks.plugins.api_key import ApiKey
    from backworks.plugins.api_key.config import ApiKeyConfig

    plugin = ApiKey(ApiKeyConfig.model_validate({"keys": [{"consumer": "alice", "sha256": DIGEST}]}), instance="k")
    entry = plugin._match(KEY)
    assert entry is not None and entry.consumer == "alice"


def test_hashing_imports_no_broker_client_and_no_web_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_BY, "keys", "hash", KEY], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == DIGEST
    imported = set(json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
