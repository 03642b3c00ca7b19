from __future__ import annotations

import pytest
from pydantic import ValidationError

from backworks.contracts.blueprint import Blueprint, handler_instance

MINIMAL = {"name": "api", "endpoints": {"e": {"path": "/x", "handler": {"type": "mock"}}}}


def test_defaults() -> None:
    blueprint = Blueprint.model_validate(MINIMAL)
    assert blueprint.nats.embedded
    assert blueprint.defaults.timeout_ms == 5000
    assert blueprint.endpoints["e"].methods == ["GET"]
    assert set(blueprint.instances()) == {handler_instance("e")}


def test_cluster_urls_are_split() -> None:
    blueprint = Blueprint.model_validate({**MINIMAL, "nats": {"url": "nats://h1:4222, nats://h2:4222"}})
    assert not blueprint.nats.embedded
    assert blueprint.nats.servers == ["nats://h1:4222", "nats://h2:4222"]


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"name": "Not A Name"},
        {"endpoints": {}},
        {"endpoints": {"e": {"path": "x", "handler": {"type": "mock"}}}},
        {"endpoints": {"e": {"path": "/x", "methods": ["FETCH"], "handler": {"type": "mock"}}}},
        {"endpoints": {"e": {"path": "/x", "handler": {"type": "mock", "surprise": True}}}},
        {"plugins": {"bad.name": {"type": "mock"}}},
    ],
)
def test_invalid_structures_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Blueprint.model_validate({**MINIMAL, **change})


def test_chain_puts_defaults_first_without_repeats() -> None:
    blueprint = Blueprint.model_validate(
        {
            **MINIMAL,
            "defaults": {"plugins": ["a", "b"]},
            "plugins": {"a": {"type": "x"}, "b": {"type": "x"}, "c": {"type": "x"}},
            "endpoints": {"e": {"path": "/x", "plugins": ["c", "a"], "handler": {"type": "mock"}}},
        }
    )
    assert blueprint.chain("e") == ["a", "b", "c"]
