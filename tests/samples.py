"""Well-formed sample plugins that several test modules share, and the plugin source text they write to folders.

A test that needs a plugin of a common shape takes it from here (or subclasses it to change its metadata):

- :class:`Passthrough`, a request processor that continues unchanged;
- :func:`processor`, pass-through request processors built with a name, version, priority and dependencies;
- :class:`Answer`, a handler answering a fixed body;
- :class:`KeyConfig`, a config holding one secret.

:data:`PROCESSOR_FACTORY_SOURCE` is the same factory as Python source, for tests that write plugins into a
``plugin_dirs`` folder with :func:`write_plugin_file`. Deliberately malformed classes (the input of a test that
rejects them) stay in that test.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.plugin import Action, Continue, EmptyConfig, Handler, PluginClass, RequestProcessor, Respond

ANSWER_BODY = b"answered"
PLUGIN_DIR = "local"  # what the blueprints of these tests list: ``plugin_dirs: [local]``


class Passthrough(RequestProcessor[EmptyConfig]):
    """Continues with the envelope unchanged; subclass it to give a test its own name, version or metadata."""

    name = "passthrough"
    version = "1.0.0"
    description = "Continues unchanged."

    async def process_request(self, envelope: Envelope) -> Action:
        return Continue(envelope)


def processor(name: str, version: str = "1.0.0", priority: int = 0, **dependencies: str) -> PluginClass:
    """A :class:`Passthrough` named ``name``; each keyword is a dependency (``api_key=">=1"`` is on ``api-key``)."""
    attributes = {
        "name": name,
        "version": version,
        "description": name,
        "priority": priority,
        "dependencies": {key.replace("_", "-"): value for key, value in dependencies.items()},
    }
    cls: PluginClass = type(name.title(), (Passthrough,), attributes)
    return cls


class Answer(Handler[EmptyConfig]):
    """A handler answering 200 with :data:`ANSWER_BODY`."""

    name = "answer"
    version = "1.0.0"
    description = "Answers a fixed body."

    async def handle(self, envelope: Envelope) -> Action:
        return Respond(HttpResponse(status=200, body=ANSWER_BODY))


class KeyConfig(BaseModel):
    """One secret key, and nothing else."""

    model_config = ConfigDict(extra="forbid")
    key: SecretStr


# :func:`processor` as a plugin file's source: a folder module calls it, e.g. ``Rbac = processor("rbac", "1.2.0")``.
PROCESSOR_FACTORY_SOURCE = """
from backworks import Action, Continue, EmptyConfig, Envelope, RequestProcessor


def processor(plugin_name, plugin_version="1.0.0", plugin_priority=0, **needs):
    class Local(RequestProcessor[EmptyConfig]):
        name = plugin_name
        version = plugin_version
        description = "A local plugin."
        dependencies = {key.replace("_", "-"): value for key, value in needs.items()}
        priority = plugin_priority

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    Local.__module__ = __name__
    return Local

"""


def write_plugin_file(tmp_path: Path, filename: str, source: str) -> Path:
    """Write ``source`` as ``tmp_path/local/filename``, a module of the plugin folder a blueprint there lists."""
    folder = tmp_path / PLUGIN_DIR
    folder.mkdir(exist_ok=True)
    path = folder / filename
    path.write_text(source)
    return path
