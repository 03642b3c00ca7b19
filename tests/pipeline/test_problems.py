from __future__ import annotations

import json

from backworks.pipeline.problems import PROBLEM_CONTENT_TYPE, problem


def test_a_plugin_problem_is_problem_json_with_its_extra_members_and_headers() -> None:
    response = problem(
        422, "Invalid request", "2 violations", headers={"X-Why": "schema"}, errors=[{"pointer": "/a", "message": "m"}]
    )
    assert response.status == 422
    assert response.header("content-type") == PROBLEM_CONTENT_TYPE
    assert response.header("x-why") == "schema"
    document = json.loads(response.body)
    assert document == {
        "type": "https://backworks.dev/problems/invalid-request",
        "title": "Invalid request",
        "status": 422,
        "detail": "2 violations",
        "errors": [{"pointer": "/a", "message": "m"}],
    }
