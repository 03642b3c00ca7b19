from __future__ import annotations

import json

from typer.testing import CliRunner

from backworks.cli import app
from backworks.local.asyncapi import build
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.files import EXAMPLE


def test_every_stage_subject_is_a_documented_receive_channel(example: LoadedBlueprint) -> None:
    document = build(example, "1.2.3")
    assert document["asyncapi"].startswith("3.")
    assert document["info"] == {
        "title": "hello-api",
        "version": "1.2.3",
        "description": document["info"]["description"],
    }
    addresses = {name: channel["address"] for name, channel in document["channels"].items()}
    for stage in (s for endpoint in example.model.endpoints for s in example.itinerary(endpoint)):
        assert addresses[stage.label] == f"bw.stage.{stage.instance}.{stage.phase.value}"
        assert document["operations"][stage.label]["action"] == "receive"
    assert document["operations"]["events"]["action"] == "send"
    assert "Envelope" in document["components"]["schemas"]
    assert "DeadLetter" in document["components"]["schemas"]


def test_cli_writes_the_document(tmp_path: object) -> None:
    result = CliRunner().invoke(app, ["asyncapi", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "hello-handler.request" in json.loads(result.stdout)["channels"]
