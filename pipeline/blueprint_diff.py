"""What changes between two blueprints: instances and endpoints added, removed, changed, and settings that only a
restart applies. ``backworks apply`` prints it; services use it to reload only what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backworks.pipeline.blueprints import LoadedBlueprint

RESTART_SECTIONS = ("name", "nats", "gateway", "events", "audit", "alerts", "plugin_dirs", "processes")
"""Top-level sections a running fleet does not reload: a change there is reported as needing a restart."""


def instance_fingerprint(loaded: LoadedBlueprint, name: str) -> dict[str, Any]:
    """What makes two revisions of an instance the same (its whole spec, as written)."""
    return loaded.instances[name].spec.model_dump(mode="json")


def endpoint_fingerprint(loaded: LoadedBlueprint, name: str) -> dict[str, Any]:
    """What the gateway serves for an endpoint: its route, its resolved itinerary and deadline (not its handler's
    config, which is the ``<endpoint>-handler`` instance's)."""
    endpoint = loaded.model.endpoints[name]
    return {
        "path": endpoint.path,
        "methods": endpoint.methods,
        "itinerary": [stage.model_dump(mode="json") for stage in loaded.itinerary(name)],
        "timeout_ms": loaded.model.timeout_ms(name),
        "events": endpoint.events.model_dump(mode="json"),
        "description": endpoint.description,
    }


def _split(old: set[str], new: set[str], same: Any) -> tuple[tuple[str, ...], ...]:
    return (
        tuple(sorted(new - old)),
        tuple(sorted(old - new)),
        tuple(sorted(name for name in old & new if not same(name))),
    )


@dataclass(frozen=True)
class BlueprintDiff:
    """The difference from an ``old`` blueprint to a ``new`` one."""

    instances_added: tuple[str, ...] = ()
    instances_removed: tuple[str, ...] = ()
    instances_changed: tuple[str, ...] = ()
    endpoints_added: tuple[str, ...] = ()
    endpoints_removed: tuple[str, ...] = ()
    endpoints_changed: tuple[str, ...] = ()
    restart_only: tuple[str, ...] = field(default=())
    """Sections that differ but take effect only when the services restart (``gateway``, ``nats``…)."""

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in self.__dataclass_fields__)

    def summary(self) -> str:
        """One line: ``+1 instance, ~2 instances, -1 endpoint`` (``no changes`` when empty)."""
        parts = []
        for sign, what, names in (
            ("+", "instance", self.instances_added),
            ("-", "instance", self.instances_removed),
            ("~", "instance", self.instances_changed),
            ("+", "endpoint", self.endpoints_added),
            ("-", "endpoint", self.endpoints_removed),
            ("~", "endpoint", self.endpoints_changed),
        ):
            if names:
                parts.append(f"{sign}{len(names)} {what}{'s' if len(names) > 1 else ''}")
        if self.restart_only:
            parts.append(f"restart-only: {', '.join(self.restart_only)}")
        return ", ".join(parts) or "no changes"

    def lines(self) -> list[str]:
        """The diff for a terminal, one change a line."""
        out = []
        for label, names in (
            ("instance added", self.instances_added),
            ("instance removed", self.instances_removed),
            ("instance changed", self.instances_changed),
            ("endpoint added", self.endpoints_added),
            ("endpoint removed", self.endpoints_removed),
            ("endpoint changed", self.endpoints_changed),
        ):
            sign = {"added": "+", "removed": "-", "changed": "~"}[label.split()[1]]
            out += [f"  {sign} {label.split()[0]} {name} ({label.split()[1]})" for name in names]
        out += [f"  ! {section} changed: takes effect when the services restart" for section in self.restart_only]
        return out

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}


def diff(old: LoadedBlueprint, new: LoadedBlueprint) -> BlueprintDiff:
    """What applying ``new`` over ``old`` changes."""
    added, removed, changed = _split(
        set(old.instances),
        set(new.instances),
        lambda name: instance_fingerprint(old, name) == instance_fingerprint(new, name),
    )
    e_added, e_removed, e_changed = _split(
        set(old.model.endpoints),
        set(new.model.endpoints),
        lambda name: endpoint_fingerprint(old, name) == endpoint_fingerprint(new, name),
    )
    before, after = old.model.model_dump(mode="json"), new.model.model_dump(mode="json")
    restart = tuple(section for section in RESTART_SECTIONS if before.get(section) != after.get(section))
    return BlueprintDiff(added, removed, changed, e_added, e_removed, e_changed, restart)
