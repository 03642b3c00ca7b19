"""Dependency checks name the whole chain; endpoint order keeps the blueprint's, dependencies first."""

from __future__ import annotations

from backworks.pipeline.dependencies import EndpointPlan, plan_endpoint, type_problems
from backworks.pipeline.plugin import PluginClass
from tests.samples import Answer, processor


def classes(*items: PluginClass) -> dict[str, PluginClass]:
    return {item.name: item for item in items}


def test_satisfied_dependencies_have_no_problems() -> None:
    known = classes(processor("acl", rbac=">=1,<2"), processor("rbac", api_key="~=1.2"), processor("api-key", "1.4.0"))
    assert type_problems("acl", known, {}) == []


def test_missing_dependency_names_the_chain() -> None:
    known = classes(processor("acl", rbac=">=1"), processor("rbac", api_key=">=1.0,<2"))
    assert type_problems("acl", known, {}) == [
        "missing dependency acl -> rbac -> api-key: rbac needs plugin 'api-key' (>=1.0,<2), which is not installed; "
        "pip install a package providing it or add its folder to plugin_dirs"
    ]


def test_version_conflict_names_the_chain_and_both_versions() -> None:
    known = classes(
        processor("acl", rbac=""), processor("rbac", "1.2.0", api_key=">=2,<3"), processor("api-key", "1.4.0")
    )
    assert type_problems("acl", known, {}) == [
        "version conflict acl -> rbac -> api-key: rbac 1.2.0 needs api-key >=2,<3 but api-key 1.4.0 is installed; "
        "install a matching version"
    ]


def test_cycles_are_named_from_where_they_start() -> None:
    known = classes(processor("a", b=""), processor("b", c=""), processor("c", b=""))
    assert type_problems("a", known, {}) == ["dependency cycle: b -> c -> b; remove one of these dependencies"]
    two = classes(processor("x", y=""), processor("y", x=""))
    assert type_problems("x", two, {}) == ["dependency cycle: x -> y -> x; remove one of these dependencies"]


def test_broken_and_handler_dependencies_are_problems() -> None:
    known = classes(processor("a", broken="", answer=""), Answer)
    problems = type_problems("a", known, {"broken": RuntimeError("plugin 'broken' breaks the contract:\n  - x")})
    assert problems == [
        "dependency a -> broken: plugin 'broken' cannot be loaded: plugin 'broken' breaks the contract:",
        "dependency a -> answer: 'answer' is a handler, which runs last on its own endpoint; "
        "a plugin cannot depend on a handler",
    ]


def plan(explicit: list[str], instances: dict[str, PluginClass], declared: list[str] | None = None) -> EndpointPlan:
    usable = {cls.name for cls in instances.values()}
    return plan_endpoint("e", explicit, "e-handler", instances, declared or list(instances), usable)


def test_blueprint_order_is_kept_when_dependencies_allow_it() -> None:
    instances = {"one": processor("one"), "two": processor("two", one=""), "three": processor("three")}
    assert plan(["one", "three", "two"], instances).chain == ["one", "three", "two"]


def test_a_dependency_moves_just_before_its_first_dependent() -> None:
    instances = {"auth": processor("auth", key=""), "log": processor("log"), "key": processor("key")}
    result = plan(["auth", "log", "key"], instances)
    assert result.chain == ["key", "auth", "log"]
    assert result.added == [] and result.problems == []


def test_a_chain_of_dependencies_moves_before_its_earliest_transitive_dependent() -> None:
    instances = {
        "log": processor("log"), "acl": processor("acl", rbac=""), "rbac": processor("rbac", api_key=""),
        "api-key": processor("api-key"), "tail": processor("tail"),
    }  # fmt: skip
    assert plan(["log", "acl", "tail", "rbac", "api-key"], instances).chain == ["log", "api-key", "rbac", "acl", "tail"]


def test_an_endpoint_with_a_cycle_keeps_the_blueprint_order() -> None:
    """The cycle itself is reported by ``type_problems``; ordering must not loop or drop a stage."""
    instances = {"a": processor("a", b=""), "b": processor("b", a=""), "c": processor("c")}
    assert plan(["c", "a", "b"], instances).chain == ["c", "a", "b"]
    assert "dependency cycle: a -> b -> a" in "\n".join(type_problems("a", classes(*instances.values()), {}))


def test_priority_orders_dependencies_the_blueprint_leaves_unordered() -> None:
    instances = {
        "app": processor("app", low="", high=""),
        "low": processor("low", priority=1),
        "high": processor("high", priority=9),
    }
    result = plan(["app"], instances)
    assert result.chain == ["high", "low", "app"]
    assert sorted(result.added) == ["high", "low"]
    assert plan(["app", "low", "high"], instances).chain == ["low", "high", "app"], "explicit order beats priority"


def test_a_declared_instance_is_added_for_a_dependency_transitively() -> None:
    instances = {"acl": processor("acl", rbac=""), "r": processor("rbac", key=""), "k": processor("key")}
    result = plan(["acl"], instances)
    assert result.chain == ["k", "r", "acl"] and result.added == ["r", "k"]


def test_handler_dependencies_are_added_before_the_handler() -> None:
    class Needy(Answer):
        name = "needy"
        dependencies = {"key": ""}  # noqa: RUF012  # class metadata, as plugins write it

    instances: dict[str, PluginClass] = {"e-handler": Needy, "k": processor("key")}
    result = plan_endpoint("e", [], "e-handler", instances, ["k"], {"key"})
    assert result.chain == ["k"] and result.problems == []


def test_missing_or_ambiguous_instances_are_problems() -> None:
    instances = {"acl": processor("acl", rbac=""), "r1": processor("rbac"), "r2": processor("rbac")}
    (ambiguous,) = plan(["acl"], instances).problems
    assert ambiguous.instance == "acl"
    assert "several instances of it are declared (r1, r2): list the one to use" in ambiguous.message
    assert plan(["acl", "r2"], instances).chain == ["r2", "acl"], "listing one resolves it"
    only_acl = {"acl": processor("acl", rbac=">=1")}
    (missing,) = plan_endpoint("e", ["acl"], "e-handler", only_acl, ["acl"], {"acl", "rbac"}).problems
    assert missing.message == (
        "endpoint 'e': 'acl' (acl) needs plugin 'rbac' (>=1), but the blueprint declares no instance of it: "
        "add one under /plugins"
    )


def provider(name: str, *capabilities: str) -> PluginClass:
    cls = processor(name)
    cls.capabilities = capabilities
    return cls


def requiring(name: str, *capabilities: str) -> PluginClass:
    cls = processor(name)
    cls.requires_capabilities = capabilities
    return cls


def test_a_required_capability_moves_its_provider_first() -> None:
    instances = {"authz": requiring("authz", "principal"), "log": processor("log"), "keys": provider("k", "principal")}
    result = plan(["authz", "log", "keys"], instances)
    assert result.chain == ["keys", "authz", "log"] and result.problems == []


def test_any_provider_of_the_capability_will_do() -> None:
    instances = {"authz": requiring("authz", "principal"), "token": provider("jwt", "principal", "auth.jwt")}
    assert plan(["token", "authz"], instances).chain == ["token", "authz"]


def test_a_missing_capability_names_the_chain_and_the_declared_providers() -> None:
    instances = {
        "authz": requiring("authz", "principal"), "log": processor("log"),
        "keys": provider("api-key", "principal"), "token": provider("jwt", "principal"),
    }  # fmt: skip
    (problem,) = plan(["log", "authz"], instances).problems
    assert problem.instance == "authz"
    assert problem.message == (
        "endpoint 'e': 'authz' (authz) requires the 'principal' capability from an earlier stage, but nothing in its "
        "chain provides it (log -> authz -> e-handler): add one of the declared instances that provide it "
        "(keys (api-key), token (jwt)) to this endpoint's plugins"
    )
    alone = {"authz": requiring("authz", "principal")}
    (nothing,) = plan(["authz"], alone).problems
    assert "declare an instance of a plugin that provides it (e.g. api-key or jwt" in nothing.message
    assert plan(["authz"], {**alone, "keys": provider("api-key", "principal")}).added == [], "never added implicitly"
