"""The configs one stage replica serves: its instance as each recent blueprint revision declares it.

An envelope names the revision it started under (``Envelope.revision``); the stage runs it with that revision's
plugin object. Revisions whose instance spec is the same share one plugin object, so only a changed config builds
a new one (``startup`` called before it serves). A plugin object no kept revision names any more is shut down once
the envelopes it is working on are done. An envelope of a revision this replica has not seen is served after the
revision is read from ``bw_config``; one whose revision is gone from it fails with a cause that says so.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from nats.js import JetStreamContext

from backworks.pipeline.blueprint_diff import instance_fingerprint
from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance
from backworks.pipeline.errors import RevisionError
from backworks.pipeline.plugin import Plugin
from backworks.pipeline.revisions import RevisionStore, load

log = structlog.get_logger("backworks.stage")

DEFAULT_KEEP = 5
"""Revisions a replica keeps configs for: envelopes of older ones are served after a read from ``bw_config``."""


@dataclass(eq=False)
class Version:
    """One plugin object of the instance: the config one or more revisions declare."""

    instance: ResolvedInstance
    plugin: Plugin[Any]
    fingerprint: dict[str, Any]
    inflight: int = 0
    retired: bool = False
    """No kept revision names it: shut down once ``inflight`` drops to zero."""


Build = Callable[[ResolvedInstance], Plugin[Any]]


class InstanceVersions:
    """The plugin objects of one instance, by revision."""

    def __init__(
        self,
        first: ResolvedInstance,
        plugin: Plugin[Any],
        revision: int | None,
        build: Build,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        self.name = first.name
        self.build = build
        self.keep = keep
        self.start = Version(first, plugin, first.spec.model_dump(mode="json"))
        """The version of the revision this replica started with: envelopes that name no revision use it."""
        self.latest = self.start
        self.revision = revision
        """The newest revision this replica took (None: it started from a file, with no revision stored)."""
        self.by_revision: OrderedDict[int, Version] = OrderedDict()
        if revision is not None:
            self.by_revision[revision] = self.start
        self.store: RevisionStore | None = None
        self._loading: dict[int, asyncio.Task[Version | None]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.learn: Callable[[LoadedBlueprint], None] | None = None
        self._open: list[Version] = [self.start]
        """Versions not yet retired: a revision with the same spec reuses one of them."""

    async def open(self, js: JetStreamContext, learn: Callable[[LoadedBlueprint], None] | None = None) -> None:
        """Read revisions from ``js``'s ``bw_config``; ``learn`` sees every revision loaded (its other instances)."""
        self.learn = learn
        try:
            self.store = await RevisionStore.open(js)
        except RevisionError:
            self.store = None  # no bucket (a test broker): only the start version serves

    def known(self, revision: int | None) -> Version | None:
        if revision is None:
            return self.start if not self.start.retired else self.latest
        return self.by_revision.get(revision)

    async def get(self, revision: int | None) -> Version:
        """The version serving ``revision``; ``RevisionError`` when the revision cannot be read or has no such
        instance (the caller fails the envelope with that message)."""
        found = self.known(revision)
        if found is not None:
            return found
        assert revision is not None
        task = self._loading.get(revision)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(revision))
            self._loading[revision] = task
            task.add_done_callback(lambda _: self._loading.pop(revision, None))
        version = await asyncio.shield(task)
        if version is None:
            raise RevisionError(f"revision {revision} of the blueprint declares no instance {self.name!r}")
        return version

    async def adopt(self, revision: int) -> None:
        """Take revision ``revision`` as the newest (the ``current`` watch): build its config now if it changed."""
        if revision not in self.by_revision:
            await self.get_or_none(revision)
        self.revision = revision if self.revision is None else max(self.revision, revision)

    async def get_or_none(self, revision: int) -> Version | None:
        try:
            return await self.get(revision)
        except RevisionError as exc:
            log.info("revision without this instance", instance=self.name, revision=revision, detail=str(exc))
            return None

    def begin(self, version: Version) -> None:
        version.inflight += 1

    def end(self, version: Version) -> None:
        version.inflight -= 1
        if version.retired and version.inflight == 0:
            self._close(version)

    async def _fetch(self, revision: int) -> Version | None:
        if self.store is None:
            raise RevisionError(f"revision {revision} cannot be read: this replica has no access to bw_config")
        loaded = load(await self.store.get(revision))
        if self.learn is not None:
            self.learn(loaded)
        item = loaded.instances.get(self.name)
        if item is None:
            return None
        fingerprint = instance_fingerprint(loaded, self.name)
        version = next((v for v in self._open if v.fingerprint == fingerprint), None)
        if version is None:  # a changed config: a new plugin object, started before it serves
            version = Version(item, self.build(item), fingerprint)
            await version.plugin.startup()
            self._open.append(version)
            log.info("instance config rebuilt", instance=self.name, revision=revision)
        self._remember(revision, version)
        return version

    def _remember(self, revision: int, version: Version) -> None:
        self.by_revision[revision] = version
        self.by_revision = OrderedDict(sorted(self.by_revision.items()))
        while len(self.by_revision) > self.keep:
            self.by_revision.popitem(last=False)
        self.latest = self.by_revision[next(reversed(self.by_revision))]
        kept = [*self.by_revision.values(), self.latest]
        for candidate in list(self._open):
            if all(candidate is not v for v in kept):
                candidate.retired = True
                self._open.remove(candidate)
                if candidate.inflight == 0:
                    self._close(candidate)

    def _close(self, version: Version) -> None:
        async def shutdown() -> None:
            try:
                await version.plugin.shutdown()
            except Exception:
                log.exception("plugin shutdown failed", instance=self.name)

        task = asyncio.get_running_loop().create_task(shutdown())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def plugins(self) -> list[Plugin[Any]]:
        """Every plugin object still open (for the replica's own shutdown)."""
        return [version.plugin for version in self._open]

    async def closed(self) -> None:
        """Wait for the shutdowns of retired plugin objects under way."""
        if self._closing:
            await asyncio.wait(set(self._closing))
