"""Version pins: the plugin versions a blueprint allows to serve an instance (``plugins.<name>.version``).

Two versions of one plugin can serve side by side (each instance's replicas in their own virtualenv or
image); a pin keeps a replica of the wrong version from serving an instance. The check runs in the replica,
before it connects or consumes: the process that validates the blueprint (the gateway, ``backworks validate``)
may have another version installed than the replicas, so it does not judge the pin.
"""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from backworks.pipeline.blueprints import ResolvedInstance
from backworks.pipeline.contract import location
from backworks.pipeline.errors import PipelineError


class VersionRefused(PipelineError):
    """This replica's plugin version is outside the version range the blueprint pins for the instance."""


def allows(pin: str | None, version: str) -> bool:
    """Whether ``version`` satisfies ``pin`` (None: any version); prereleases count as their version."""
    if pin is None:
        return True
    try:
        return Version(version) in SpecifierSet(pin, prereleases=True)
    except InvalidVersion:
        return False


def check(instance: ResolvedInstance) -> None:
    """Raise ``VersionRefused`` when this process's plugin for ``instance`` is outside the instance's pin."""
    pin, cls = instance.spec.version, instance.cls
    if allows(pin, cls.version):
        return
    raise VersionRefused(
        f"instance {instance.name!r} is pinned to plugin {cls.name!r} versions {pin!r} (/plugins/{instance.name}/"
        f"version), but this replica runs {cls.name} {cls.version} (at {location(cls)}): it refuses to serve it. "
        f"Run this instance's replicas where a version in range is installed, or change the pin"
    )
