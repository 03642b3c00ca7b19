"""Request credentials: the standard headers and the names plugins declare, redacted and masked in free text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline import blueprints, credentials, secrets
from backworks.pipeline.secrets import MASK
from tests.files import write_blueprint
from tests.samples import LEAKY_CONFIG, LEAKY_SOURCE, write_plugin_file


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    credentials.forget_declared()
    secrets.forget_all()


def envelope() -> Envelope:
    return Envelope(
        route="r", method="GET", path="/",
        headers=[("Authorization", "Bearer tk-abcdef123"), ("cookie", "sid=ck-0987654; theme=dark"),
                 ("x-api-key", "hk-55aa55aa"), ("accept", "*/*")],
        query=[("api_key", "qk-77bb77bb"), ("page", "2")],
        response=HttpResponse(headers=[("set-cookie", "sid=sc-1234abcd; HttpOnly"), ("etag", "v1")]),
    )  # fmt: skip


def test_standard_headers_are_redacted_everywhere_and_the_rest_kept() -> None:
    redacted = credentials.redact_envelope(envelope())
    assert redacted.headers == [("Authorization", MASK), ("cookie", MASK), ("x-api-key", "hk-55aa55aa"),
                                ("accept", "*/*")]  # fmt: skip
    assert redacted.query == [("api_key", "qk-77bb77bb"), ("page", "2")]
    assert redacted.response is not None and redacted.response.headers == [("set-cookie", MASK), ("etag", "v1")]
    assert envelope().headers[0] == ("Authorization", "Bearer tk-abcdef123"), "a copy: the original is untouched"


def test_names_a_plugin_declares_are_redacted_once_its_blueprint_is_loaded(tmp_path: Path) -> None:
    write_plugin_file(tmp_path, "leaky.py", LEAKY_SOURCE)
    blueprint = f"""name: api
plugin_dirs: [local]
plugins: {{leaky: {{type: leaky, config: {{api_token: {LEAKY_CONFIG["api_token"]}, db_password: x1234567,
                                          key_header: X-Client-Key}}}}}}
endpoints: {{e: {{path: /x, plugins: [leaky], handler: {{type: mock}}}}}}
"""
    assert not credentials.is_credential_header("x-client-key")
    blueprints.load(write_blueprint(tmp_path, blueprint))
    assert credentials.is_credential_header("X-Client-Key") and credentials.is_credential_query("api_key")
    given = envelope()
    given.headers.append(("x-client-key", "ck-declared1"))
    redacted = credentials.redact_envelope(given)
    assert ("x-client-key", MASK) in redacted.headers and redacted.query == [("api_key", MASK), ("page", "2")]


def test_values_for_free_text_include_the_token_after_its_scheme_and_each_cookie() -> None:
    found = credentials.values(envelope())
    assert {"Bearer tk-abcdef123", "tk-abcdef123", "ck-0987654", "dark", "sc-1234abcd"} <= set(found)
    assert "hk-55aa55aa" not in found, "not declared by any loaded plugin"
    assert list(found) == sorted(found, key=len, reverse=True), "longest first: a value containing another goes whole"


async def test_every_log_line_of_a_request_being_served_hides_its_credentials() -> None:
    log = structlog.get_logger("test")

    async def serve() -> None:
        with credentials.serving(envelope()):
            log.warning("upstream refused", detail="sent Bearer tk-abcdef123 and sid=ck-0987654")

    with capture_logs(processors=[credentials.mask_credentials]) as lines:
        await asyncio.create_task(serve())
        log.warning("after", detail="tk-abcdef123")
    assert lines[0]["detail"] == f"sent {MASK} and sid={MASK}"
    assert lines[1]["detail"] == "tk-abcdef123", "bound to the request's task only"
