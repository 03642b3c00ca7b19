"""schemathesis, an independent OpenAPI fuzzer, against the running notes example: no 5xx, and every response
conforms to the document the gateway serves (status code, content type, body schema, headers).

Each operation gets a bounded, derandomized number of generated requests, sent with the example's demo API key
and an admin token so the protected operations are exercised beyond their 401: valid requests (positive mode), then
invalid ones (negative mode), which must also be rejected with a 4xx (``negative_data_rejection``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NegativeDataRejectionConfig  # the default list is not public
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backworks.gateway.openapi import OPENAPI_PATH
from tests.e2e.notes import ALICE_KEY, EXAMPLE, running_example

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 12
"""Generated requests per operation: small, so the whole run stays well under two minutes on a busy machine."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    response_headers_conformance,
]


REJECTIONS = [*NegativeDataRejectionConfig._DEFAULT_EXPECTED_STATUSES, "413"]
"""Statuses that reject invalid data: schemathesis' own list, and 413 (a body over the gateway's limit is
rejected before any schema is looked at; the fuzzer makes such bodies when it breaks a ``maxLength``)."""
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}})
FAILURE_CHARS = 3000
"""A failure's report is cut here: a shrunk request body can still be 100 KB."""


def admin_token() -> str:
    secret = (EXAMPLE / "demo-jwt-secret.txt").read_text().strip()
    now = int(time.time())
    claims = {"sub": "fuzzer", "scope": "notes:admin", "iss": "notes-demo", "aud": "notes-api", "exp": now + 600}
    return jwt.encode(claims, secret, algorithm="HS256")


def fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], base: str, mode: GenerationMode) -> None:
    """Up to ``MAX_EXAMPLES`` generated requests to ``operation``; the first failing check raises (shrunk)."""
    credentials = {"x-api-key": ALICE_KEY, "authorization": f"Bearer {admin_token()}"}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def requests(case: schemathesis.Case[Any]) -> None:
        checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
        case.call_and_validate(base_url=base, headers=credentials, checks=checks, timeout=10)

    requests()


def test_the_example_api_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 yet, so the operations are driven with hypothesis.
    with running_example(tmp_path) as example:
        api = schemathesis.openapi.from_url(example.base + OPENAPI_PATH, config=CONFIG)
        operations = []
        for result in api.get_all_operations():
            assert isinstance(result, Ok), f"the document has an operation schemathesis cannot read: {result}"
            operations.append(result.ok())
        assert len(operations) == 7
        failures: dict[str, str] = {}
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz(operation, example.base, mode)
                except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except Exception as exc:  # every operation is fuzzed; all failures are reported together
                    failures[f"{operation.label} ({mode.value})"] = f"{type(exc).__name__}: {exc}"[:FAILURE_CHARS]
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in failures.items())
