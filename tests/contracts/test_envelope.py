from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from backworks.contracts.envelope import Envelope, HttpResponse, Principal, Stage, StageError, Timing
from backworks.contracts.names import Phase
from backworks.contracts.schemagen import SCHEMA_DIR, generate, render


def full_envelope() -> Envelope:
    return Envelope(
        request_id="r-1",
        deadline=1234.5,
        reply_to="_INBOX.bw.g.c",
        route="hello",
        method="POST",
        path="/hello/world",
        path_params={"name": "world"},
        query=[("a", "1"), ("a", "2")],
        headers=[("x-one", "1"), ("x-one", "2")],
        body=bytes(range(256)),
        itinerary=[Stage(instance="stamp", phase=Phase.REQUEST), Stage(instance="secure", phase=Phase.RESPONSE)],
        cursor=1,
        annotations={"skipped": [{"stage": "x.request", "reason": "timeout"}]},
        principal=Principal(id="u1", scopes=["read"]),
        response=HttpResponse(status=201, headers=[("content-type", "application/octet-stream")], body=b"\x00\xff"),
        timings=[Timing(stage="stamp.request", ms=0.2)],
        errors=[StageError(stage="x.request", kind="timeout", message="slow", skipped=True)],
    )


def test_round_trip_keeps_every_field_and_binary_bodies() -> None:
    envelope = full_envelope()
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert again.body == bytes(range(256))
    assert again.response is not None and again.response.body == b"\x00\xff"


def test_bodies_are_base64url_in_json_and_standard_base64_is_accepted() -> None:
    data = json.loads(Envelope(route="r", method="GET", path="/", body=b"\xff\x00").to_json())
    assert data["body"] == "_wA="
    assert data["v"] == 1
    assert Envelope.model_validate({**data, "body": "/wA="}).body == b"\xff\x00"


def test_unknown_fields_and_versions_are_rejected() -> None:
    data = json.loads(full_envelope().to_json())
    with pytest.raises(ValidationError):
        Envelope.model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**data, "v": 2})


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    envelope = full_envelope()
    assert envelope.header("X-One") == "1"
    envelope.set_header("X-One", "3")
    assert [v for k, v in envelope.headers if k == "x-one"] == ["3"]
    assert envelope.query_param("a") == "1"


def test_first_response_stage() -> None:
    envelope = full_envelope()
    assert envelope.first_response_stage() == 1
    envelope.itinerary = envelope.itinerary[:1]
    assert envelope.first_response_stage() == 1


@pytest.mark.parametrize("name", sorted(generate()))
def test_committed_schemas_match_the_models(name: str) -> None:
    committed = (SCHEMA_DIR / name).read_text()
    assert committed == render(generate()[name]), f"{name} drifted: run `python -m backworks.contracts.schemagen`"
