from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from backworks.contracts.envelope import Envelope, HttpResponse, Principal, Stage, StageError, Timing
from backworks.contracts.names import Phase
from backworks.contracts.schemagen import SCHEMA_DIR, generate, render
from backworks.contracts.types import FailureKind


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
        principal=Principal(consumer="u1", scopes=["read"]),
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


def test_failing_an_optional_stage_skips_it_and_a_critical_one_ends_the_itinerary() -> None:
    optional = Stage(instance="opt", phase=Phase.REQUEST)
    critical = Stage(instance="crit", phase=Phase.REQUEST, critical=True)
    after = Stage(instance="after", phase=Phase.RESPONSE)
    envelope = Envelope(route="r", method="GET", path="/", itinerary=[optional, critical, after])

    skipped = envelope.fail_stage(FailureKind.TIMEOUT, "slow")
    assert skipped == StageError(stage="opt.request", kind=FailureKind.TIMEOUT, message="slow", skipped=True)
    assert envelope.cursor == 1 and envelope.current == critical
    assert envelope.annotations["skipped"] == [{"stage": "opt.request", "reason": "timeout"}]

    fatal = envelope.fail_stage(FailureKind.ERROR, "boom")
    assert not fatal.skipped and fatal.stage == "crit.request"
    assert envelope.cursor == 3 and envelope.current is None, "nothing runs after a failed critical stage"
    assert envelope.errors == [skipped, fatal]
    assert len(envelope.annotations["skipped"]) == 1


def test_a_stage_failed_with_skip_false_ends_the_itinerary_even_when_optional() -> None:
    envelope = Envelope(route="r", method="GET", path="/", itinerary=[Stage(instance="o", phase=Phase.REQUEST)] * 2)
    error = envelope.fail_stage(FailureKind.EXHAUSTED, "no replica acknowledged it", skip=False)
    assert not error.skipped and envelope.cursor == 2 and "skipped" not in envelope.annotations
    assert json.loads(envelope.to_json())["errors"][0]["kind"] == "exhausted"
    assert f"{error.kind}" == "exhausted", "kinds read as their value in subjects and messages"
