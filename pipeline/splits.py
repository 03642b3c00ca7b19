"""The splits of a blueprint's chains (``contracts.splits``) as the validator and the tools see them.

A split makes an endpoint's chain one of several *variants* (one branch picked per split). Whatever walks
chains to grant or prepare something (permissions, dependency order, the gateway's itineraries) walks every
variant; whatever shows one chain (openapi, ``plugins order``) shows the baseline variant and names the branches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

from backworks.contracts.blueprint import Blueprint, handler_instance
from backworks.contracts.splits import entry_split
from backworks.pipeline.plugin import Category, PluginClass

Picks = Mapping[str, str]
"""Split name -> the branch instance taken."""
SplitKey = tuple[tuple[str, str], ...]
"""Picks as a hashable, ordered key."""
Report = Callable[[str, str, str | None], None]
"""``report(json_pointer, message, instance)``: how the validator collects a problem."""


def split_key(picks: Picks) -> SplitKey:
    return tuple(sorted(picks.items()))


def variants(model: Blueprint, endpoint: str) -> list[dict[str, str]]:
    """Every combination of branches of the endpoint's splits, the baseline first; ``[{}]`` without splits."""
    splits = model.splits(endpoint)
    names = list(splits)
    combos = itertools.product(*(list(split.split) for split in splits.values()))
    return [dict(zip(names, combo, strict=True)) for combo in combos]


def branch_pointer(endpoint_pointer: str, index: int, name: str, branch: str | None = None) -> str:
    at = f"{endpoint_pointer}/plugins/{index}/{name}"
    return f"{at}/split/{branch}" if branch is not None else at


def check(report: Report, model: Blueprint, classes: Mapping[str, PluginClass], escape: Callable[[str], str]) -> None:
    """Report what is wrong with the blueprint's splits: unknown or handler branches, branches of different
    categories, a branch that also runs elsewhere in the chain, two splits of one name in an endpoint."""
    for endpoint, spec in model.endpoints.items():
        base = f"/endpoints/{escape(endpoint)}"
        plain = [*model.defaults.plugins, *(e for e in spec.plugins if isinstance(e, str))]
        seen_names: set[str] = set()
        seen_branches: dict[str, str] = {}
        for index, entry in enumerate(spec.plugins):
            found = entry_split(entry)
            if found is None:
                continue
            name, split = found
            at = branch_pointer(base, index, escape(name))
            if name in seen_names:
                report(at, f"endpoint {endpoint!r} has two splits named {name!r}: give each its own name", None)
            seen_names.add(name)
            baseline_category: Category | None = None
            for branch in split.split:
                where = branch_pointer(base, index, escape(name), escape(branch))
                if branch not in model.plugins:
                    known = ", ".join(sorted(model.plugins)) or "none"
                    report(where, f"split {name!r}: unknown plugin instance {branch!r}; declared under /plugins: "
                           f"{known}", None)  # fmt: skip
                    continue
                if branch in plain:
                    report(where, f"split {name!r}: {branch!r} also runs on its own in endpoint {endpoint!r}'s "
                           "chain; a request would run it twice: list it only in the split", branch)  # fmt: skip
                if branch in seen_branches:
                    other = seen_branches[branch]
                    report(where, f"split {name!r}: {branch!r} is already a branch of split {other!r} in this "
                           "endpoint: an instance can be a branch of one split per endpoint", branch)  # fmt: skip
                seen_branches[branch] = name
                cls = classes.get(branch)
                if cls is None:
                    continue  # its type failed to resolve: reported where it is declared
                if cls.category is Category.HANDLER or branch == handler_instance(endpoint):
                    report(where, f"split {name!r}: {branch!r} is a handler; a split chooses among the instances "
                           "that run before the handler", branch)  # fmt: skip
                elif baseline_category is None:
                    baseline_category = cls.category
                elif cls.category is not baseline_category:
                    report(where, f"split {name!r}: {branch!r} is a {cls.category.value} but the baseline "
                           f"{split.baseline!r} is a {baseline_category.value}: the branches of a split stand in for "
                           "each other, so they must be of one category", branch)  # fmt: skip


def describe(picks: Picks) -> str:
    """``auth=auth-v2,tag=tag-v1``: picks as one label (logs, metrics)."""
    return ",".join(f"{name}={branch}" for name, branch in sorted(picks.items()))
