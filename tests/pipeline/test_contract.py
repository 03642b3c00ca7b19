"""Loading checks a plugin class against the contract and says, all at once, what to fix and where."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from backworks.contracts.envelope import Envelope
from backworks.pipeline.contract import verify, version_problem
from backworks.pipeline.errors import PluginContractError
from backworks.pipeline.plugin import (
    Action,
    Continue,
    EmptyConfig,
    Handler,
    Monitoring,
    Plugin,
    RequestProcessor,
    Security,
)
from backworks.plugins.mock import Mock
from backworks.plugins.request_headers import RequestHeaders
from backworks.plugins.response_headers import ResponseHeaders
from tests.samples import Passthrough

HERE = __file__


class Good(Passthrough):
    name = "good"
    version = "1.2.3-rc.1"
    description = "Does nothing well."
    dependencies: ClassVar[dict[str, str]] = {"request-headers": ">=1.0,<2", "mock": ""}
    capabilities = ("noop",)
    priority = 5


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("1.2.3", None),
        ("1.2.3-rc.1", None),
        ("2.0.0+build.5", None),
        ("1.0", "version '1.0' is not semver: write MAJOR.MINOR.PATCH"),
        ("1.2.3.4", "version '1.2.3.4' is not semver: write MAJOR.MINOR.PATCH"),
        ("banana", "version 'banana' is not semver (it cannot be compared with constraints)"),
        (123, "version 123 is not a string"),
    ],
)
def test_a_plugin_version_is_checked_with_packaging(version: object, problem: str | None) -> None:
    found = version_problem(version)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def problems_of(cls: object) -> list[str]:
    with pytest.raises(PluginContractError) as caught:
        verify(cls, "test")
    return caught.value.problems


def test_a_plugin_that_follows_the_contract_loads_and_so_do_the_built_ins() -> None:
    assert verify(Good, "test") is Good
    for builtin in (Mock, RequestHeaders, ResponseHeaders):
        assert verify(builtin, "built-in") is builtin
        assert builtin.capabilities, f"{builtin.name} declares its capabilities"


def test_the_error_names_the_plugin_its_file_and_line_and_the_source() -> None:
    class NoVersion(RequestProcessor[EmptyConfig]):
        name = "no-version"
        description = "x"

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    with pytest.raises(PluginContractError) as caught:
        verify(NoVersion, "entry point no-version = pkg:NoVersion (pkg 1.0)")
    error = caught.value
    line = inspect.getsourcelines(NoVersion)[1]
    assert error.plugin == "no-version"
    assert str(error).startswith(
        f"plugin 'no-version' ({HERE}:{line}, entry point no-version = pkg:NoVersion (pkg 1.0)) breaks the plugin"
    )
    assert error.problems == ['no `version`: add a semver class attribute, e.g. version = "1.0.0"']


def test_every_metadata_mistake_is_reported_at_once_with_its_fix() -> None:
    class Loose(BaseModel):
        x: int = 0

    class Bad(RequestProcessor[Any]):
        name = "Bad Name"
        version = "1.0"
        description = ""
        dependencies: ClassVar[dict[str, str]] = {"api-key": "~>1", "Bad!": ">=1"}
        capabilities = "auth"  # the mistake under test (mypy allows it: a str is a Sequence[str])
        max_execution_time = 0
        is_critical = "yes"  # type: ignore[assignment]  # the mistake under test
        priority = True
        Config = Loose

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    text = "\n".join(problems_of(Bad))
    assert "`name` must be a plugin name" in text and 'add e.g. name = "bad"' in text
    assert "version '1.0' is not semver: write MAJOR.MINOR.PATCH" in text
    assert "no `description`" in text
    assert "constraint '~>1' of dependency 'api-key' is not a version specifier: use e.g. '>=1.0,<2'" in text
    assert "dependency name 'Bad!' is not a plugin name" in text
    assert "capabilities must be a list of strings" in text
    assert "max_execution_time must be a number of seconds in (0, 600]" in text
    assert "is_critical must be True or False" in text
    assert "priority must be an integer" in text
    assert "must reject unknown keys" in text and "extra='forbid'" in text


def test_hook_signatures_are_checked() -> None:
    class Sync(RequestProcessor[EmptyConfig]):
        name = "sync"
        version = "1.0.0"
        description = "x"

        def process_request(self, envelope: Envelope) -> Action:  # type: ignore[override]  # under test
            return Continue(envelope)

        async def health_check(self, verbose: bool) -> Any:  # type: ignore[override]  # under test
            return None

    class Extra(Handler[EmptyConfig]):
        name = "extra"
        version = "1.0.0"
        description = "x"

        async def handle(self, envelope: Envelope, more: int) -> Action:  # type: ignore[override]  # under test
            return Continue(envelope)

    assert problems_of(Sync) == [
        "`process_request` must be a coroutine: write `async def process_request(self, envelope)`",
        "`health_check(self, verbose)` has the wrong parameters: write `async def health_check(self)`",
    ]
    assert problems_of(Extra) == [
        "`handle(self, envelope, more)` has the wrong parameters: write `async def handle(self, envelope)`"
    ]


def test_a_missing_hook_suggests_the_misspelt_method() -> None:
    class Typo(RequestProcessor[EmptyConfig]):
        name = "typo"
        version = "1.0.0"
        description = "x"

        async def process_requests(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    assert problems_of(Typo) == [
        "a request-processor plugin must implement `async def process_request(self, envelope)` "
        "(found `process_requests`: a misspelling?)"
    ]


def test_security_needs_one_of_its_hooks_and_monitoring_its_collector() -> None:
    class Empty(Security[EmptyConfig]):
        name = "empty"
        version = "1.0.0"
        description = "x"

    class Alerts(Monitoring[EmptyConfig]):
        name = "alerts"
        version = "1.0.0"
        description = "x"

    (security,) = problems_of(Empty)
    assert security.startswith("a security plugin must implement `async def authenticate(self, envelope)` or")
    assert problems_of(Alerts) == ["a monitoring plugin must implement `async def collect_metrics(self, envelope)`"]


def test_hooks_of_another_category_run_overrides_and_hand_set_phases_are_refused() -> None:
    class Confused(RequestProcessor[EmptyConfig]):
        name = "confused"
        version = "1.0.0"
        description = "x"
        phases = ()

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)

        async def enhance_response(self, envelope: Envelope) -> Action:
            return Continue(envelope)

        async def run(self, phase: Any, envelope: Envelope) -> Action:
            return Continue(envelope)

    assert problems_of(Confused) == [
        "`enhance_response` is a response-enhancer hook, which a request-processor plugin never calls: "
        "subclass ResponseEnhancer instead, or rename the method",
        "do not override `run`: the stage host calls it to dispatch to your hooks; implement the hooks",
        "do not set `phases`: it is derived from the hooks the class implements",
    ]


def test_config_must_produce_a_json_schema() -> None:
    class Weird(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        handle: object = None
        when: Any = None
        thing: type[int] = int

    class UsesWeird(RequestProcessor[Any]):
        name = "weird"
        version = "1.0.0"
        description = "x"
        Config = Weird

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    (problem,) = problems_of(UsesWeird)
    assert problem.startswith("`Config` (Weird) has no JSON Schema:") and "JSON-compatible field types" in problem


def test_things_that_are_not_plugins_are_refused() -> None:
    assert "is not a plugin" in problems_of(object)[0]
    assert "is not a plugin" in problems_of(RequestProcessor)[0]
    assert "subclass one of RequestProcessor" in problems_of(type("Raw", (Plugin,), {"name": "raw"}))[0]
