"""Well-formed sample plugins that several test modules share, and the plugin source text they write to folders.

A test that needs a plugin of a common shape takes it from here (or subclasses it to change its metadata):

- :class:`Passthrough`, a request processor that continues unchanged;
- :func:`processor`, pass-through request processors built with a name, version, priority and dependencies;
- :class:`Answer`, a handler answering a fixed body;
- :class:`KeyConfig`, a config holding one secret.

:data:`LEAKY_SOURCE` is a plugin file with plain ``str`` secrets (``api_token``, ``db_password``) and a declared
credential header and query parameter, whose hook raises an error quoting all of them (the secret-leak tests).

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


LEAKY_SOURCE = """
from pydantic import BaseModel, ConfigDict, Field

from backworks import Action, Continue, Credentials, Envelope, Health, HealthStatus, RequestProcessor


class LeakyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_token: str
    db_password: str
    key_header: str = Field(default="x-api-key", json_schema_extra={"secret": False})


class Leaky(RequestProcessor[LeakyConfig]):
    name = "leaky"
    version = "1.0.0"
    description = "Reads a key header; fails quoting its config's secrets and the request's credentials."
    Config = LeakyConfig
    is_critical = True

    @classmethod
    def credentials(cls, config: LeakyConfig) -> Credentials:
        return Credentials(headers=(config.key_header,), query=("api_key",))

    async def process_request(self, envelope: Envelope) -> Action:
        if envelope.header("x-mode") == "pass":
            return Continue(envelope)
        raise RuntimeError(
            f"db refused {self.config.db_password} for token {self.config.api_token}; the caller sent "
            f"{envelope.header('authorization')}, {envelope.header('cookie')}, "
            f"{envelope.header(self.config.key_header)} and {envelope.query_param('api_key')}"
        )

    async def health_check(self) -> Health:
        return Health(status=HealthStatus.DEGRADED, message=f"db at postgres://app:{self.config.db_password}@db")
"""
LEAKY_CONFIG = {"api_token": "tok-live-7f3a9c2e", "db_password": "pw-h4rd-2-gu3ss"}
"""The config secrets of :data:`LEAKY_SOURCE`'s instances in these tests."""
REQUEST_CREDENTIALS = {
    "authorization": "Bearer az-9f8e7d6c5b4a",
    "cookie": "session=ck-5a4b3c2d1e0f; theme=dark",
    "x-api-key": "hk-0a1b2c3d4e5f",
}
QUERY_CREDENTIAL = "qk-123456789abc"
"""The ``api_key`` query parameter :data:`LEAKY_SOURCE` declares."""
SECRET_STRINGS = (
    *LEAKY_CONFIG.values(),
    "az-9f8e7d6c5b4a",
    "ck-5a4b3c2d1e0f",
    "hk-0a1b2c3d4e5f",
    QUERY_CREDENTIAL,
)
"""Every string that must never show: config secrets and request credentials."""


def leaks(text: str) -> list[str]:
    """The secret strings of :data:`SECRET_STRINGS` that ``text`` shows."""
    return [secret for secret in SECRET_STRINGS if secret in text]


def write_plugin_file(tmp_path: Path, filename: str, source: str) -> Path:
    """Write ``source`` as ``tmp_path/local/filename``, a module of the plugin folder a blueprint there lists."""
    folder = tmp_path / PLUGIN_DIR
    folder.mkdir(exist_ok=True)
    path = folder / filename
    path.write_text(source)
    return path
