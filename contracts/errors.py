"""The root of every error Backworks raises on purpose.

    BackworksError
    ├── backworks.contracts.errors.BlueprintError        the blueprint cannot be used (carries every issue found)
    ├── backworks.pipeline.errors.PipelineError
    │   ├── BrokerUnavailable                 NATS cannot be reached or the stream is missing
    │   │   └── PublishFailed                 JetStream did not acknowledge a publish
    │   ├── EmbeddedNatsError                 the embedded nats-server failed to start
    │   ├── PluginLoadError                   a plugin class is missing or cannot be imported
    │   │   └── PluginContractError           a plugin class breaks the contract (name, file, fixes)
    │   ├── BreakerOpen                       a plugin's fleet-shared circuit breaker refused a call
    │   ├── PluginConfigError                 a config given to the SDK or `profile` breaks its schema
    │   └── StoreError                        a plugin's key-value store (``Plugin.kv``) failed
    │       ├── StoreUnavailable              its broker or bucket did not answer in time
    │       ├── StoreConflict                 a compare-and-set lost: the key changed
    │       └── StoreNotBound                 no runtime was bound to the plugin before it asked
    │   └── RevisionError                     a blueprint revision in bw_config is missing or unreadable
    │       └── RevisionConflict              another apply stored a revision first
    ├── backworks.gateway.errors.GatewayError
    │   ├── ProblemError                      an HTTP problem (RFC 9457) to return to the client
    │   └── RequestRefused                    a request broke an edge limit while being parsed (431, 414)
    └── backworks.local.errors.LocalError     running Backworks on this machine (`up`, `nats`)
        ├── PortInUse                         a port to listen on is taken (names the port and the option)
        └── NotReady                          the broker did not come up in time

Messages say what was wrong, where, and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass


class BackworksError(Exception):
    """Root of the Backworks error tree."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a blueprint: where it is and what is wrong."""

    file: str
    pointer: str
    """JSON pointer into the blueprint (``/endpoints/hello/path``)."""
    message: str
    line: int | None = None
    column: int | None = None
    plugin: str | None = None
    """The plugin instance the issue belongs to, when there is one."""

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        scope = f" [plugin {self.plugin}]" if self.plugin else ""
        pointer = self.pointer or "/"
        return f"{where}: {pointer}{scope}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer or "/",
            "plugin": self.plugin,
            "message": self.message,
        }


class BlueprintError(BackworksError):
    """A blueprint failed to load or validate. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {issue.render()}" for issue in issues)
        count = len(issues)
        super().__init__(f"invalid blueprint ({count} problem{'s' if count != 1 else ''}):\n{lines}")
