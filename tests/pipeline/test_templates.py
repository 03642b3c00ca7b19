from __future__ import annotations

from backworks.contracts.envelope import Envelope, Principal
from backworks.pipeline.templates import render, render_value


def envelope(principal: Principal | None = None) -> Envelope:
    return Envelope(
        route="r",
        method="GET",
        path="/u/7",
        path_params={"id": "7"},
        query=[("q", "x")],
        headers=[("x-team", "blue")],
        principal=principal,
    )


def test_every_source_renders_and_absent_values_are_empty() -> None:
    text = "{path.id}|{query.q}|{header.X-Team}|{principal.consumer}|{query.none}"
    assert render(text, envelope(Principal(consumer="alice"))) == "7|x|blue|alice|", "header names match in any case"
    assert render(text, envelope()) == "7|x|blue||"


def test_text_that_is_not_a_placeholder_is_kept() -> None:
    assert render('{"a": 1} {x} {principal.scopes} {path.}', envelope()) == '{"a": 1} {x} {principal.scopes} {path.}'


def test_json_values_render_strings_and_keys_only() -> None:
    value = {"{path.id}": ["{query.q}", 1, None, {"k": "{header.x-team}"}]}
    assert render_value(value, envelope()) == {"7": ["x", 1, None, {"k": "blue"}]}
