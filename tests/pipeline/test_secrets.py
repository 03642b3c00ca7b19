"""Secret config fields: found by type or schema mark, masked in text, logs, rendered configs and schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import pytest
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from backworks.pipeline import logs, secrets
from backworks.pipeline.configs import fields_of, schema_of, validate_config
from backworks.pipeline.secrets import MASK


class Upstream(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    password: SecretStr


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: SecretStr
    webhook: str = Field(default="https://hooks.example/s3cr3t-path", json_schema_extra={"secret": True})
    upstreams: list[Upstream] = Field(default_factory=list)
    name: str = "public-name"
    retries: int | None = None


CONFIG = Config(
    api_key=SecretStr("key-123456"),
    upstreams=[Upstream(url="http://a", password=SecretStr("pw-abcdef"))],
)


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    secrets.forget_all()


def test_secret_values_come_from_secret_types_and_marked_fields_at_any_depth() -> None:
    assert secrets.secret_values(CONFIG) == {"key-123456", "https://hooks.example/s3cr3t-path", "pw-abcdef"}


def test_secret_paths_follow_refs_lists_and_unions() -> None:
    schema = schema_of(Config)
    assert secrets.is_secret_path(schema, ["api_key"])
    assert secrets.is_secret_path(schema, ["webhook"])
    assert secrets.is_secret_path(schema, ["upstreams", 0, "password"])
    assert not secrets.is_secret_path(schema, ["upstreams", 0, "url"])
    assert not secrets.is_secret_path(schema, ["name"])
    assert not secrets.is_secret_path(schema, ["retries"])
    assert not secrets.is_secret_path(schema, ["nope", 3])


def test_redact_masks_every_secret_and_keeps_the_rest() -> None:
    assert secrets.redact(CONFIG) == {
        "api_key": MASK,
        "webhook": MASK,
        "upstreams": [{"url": "http://a", "password": MASK}],
        "name": "public-name",
        "retries": None,
    }


def test_redact_schema_hides_secret_defaults() -> None:
    rendered = json.dumps(secrets.redact_schema(schema_of(Config)))
    assert "s3cr3t" not in rendered
    assert '"default": "https://hooks.example' not in rendered and MASK in rendered


def test_mask_replaces_registered_secrets_but_not_short_ones() -> None:
    secrets.register(["key-123456", "abc"])
    assert secrets.mask("sent key-123456 to abc") == f"sent {MASK} to abc"
    assert secrets.mask("token xyz-9999", ["xyz-9999"]) == f"token {MASK}"


def test_every_log_line_masks_registered_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    secrets.register(secrets.secret_values(CONFIG))
    logs.configure("test", fmt="json")
    try:
        log = structlog.get_logger("test")
        log.warning("calling upstream", detail="key=key-123456", nested={"pw": ["pw-abcdef"]})
        try:
            raise RuntimeError("refused key-123456")
        except RuntimeError:
            log.exception("failed")
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines[0]["detail"] == f"key={MASK}" and lines[0]["nested"] == {"pw": [MASK]}
    assert "key-123456" not in err and "pw-abcdef" not in err
    assert MASK in json.dumps(lines[1]["exception"])


class Named(BaseModel):
    """Plain ``str`` fields secret by their names only, and fields named like secrets that are not."""

    model_config = ConfigDict(extra="forbid")
    api_token: str = "tok-0123456789"
    db_password: str | None = "pw-0123456789"
    signingKey: str = "sk-0123456789"  # a camelCase name is matched too
    keys: list[str] = Field(default_factory=lambda: ["alice", "mobile-app", "k-0123456789abcdef0123"])
    key_size: int = 32
    token_url: str = Field(default="https://auth.example/token", json_schema_extra={"secret": False})
    mode_keys: Literal["a", "b"] = "a"
    tokens: Upstream = Field(default_factory=lambda: Upstream(url="http://tokens", password=SecretStr("pw-nested")))


def test_fields_named_like_secrets_are_secret_when_they_can_hold_text() -> None:
    assert set(secrets.secret_fields(Named)) == {"api_token", "db_password", "signingKey", "keys"}
    rendered = secrets.redact(Named())
    assert rendered["api_token"] == rendered["db_password"] == rendered["signingKey"] == MASK
    assert rendered["keys"] == [MASK, MASK, MASK]
    assert rendered["key_size"] == 32 and rendered["token_url"] == "https://auth.example/token"
    assert rendered["mode_keys"] == "a"
    assert rendered["tokens"] == {"url": "http://tokens", "password": MASK}, "a model is judged field by field"


def test_the_name_rule_is_in_the_schema_so_docs_show_and_validate_agree() -> None:
    schema = schema_of(Named)
    assert schema["properties"]["api_token"]["secret"] is True
    assert schema["properties"]["token_url"]["secret"] is False and "secret" not in schema["properties"]["key_size"]
    assert [f.name for f in fields_of(Named) if f.secret] == ["api_token", "db_password", "signingKey", "keys"]
    shown = json.dumps(secrets.redact_schema(schema))
    assert "tok-0123456789" not in shown and "pw-0123456789" not in shown and "https://auth.example/token" in shown
    _, problems = validate_config(Named, {"api_token": 12345678901})
    assert [problem.message for problem in problems] == [
        "secret value rejected by the schema's `type` rule ('string'); value hidden"
    ]


def test_free_text_masking_takes_named_scalars_but_only_long_items_of_named_lists() -> None:
    """A ``keys`` list may hold consumer names: short common words must not be masked in every log line."""
    found = secrets.secret_values(Named())
    assert {"tok-0123456789", "pw-0123456789", "sk-0123456789", "k-0123456789abcdef0123", "pw-nested"} <= found
    assert "alice" not in found and "mobile-app" not in found
    secrets.register(found)
    assert secrets.mask("alice called with tok-0123456789") == f"alice called with {MASK}"


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    api_token: str


class WithDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: Service = Service(url="http://svc", api_token="tok-default-123")
    mirrors: list[Service] = [Service(url="http://m", api_token="tok-default-456")]


def test_a_nested_models_default_shows_its_shape_with_its_secrets_masked() -> None:
    schema = secrets.redact_schema(schema_of(WithDefaults))
    assert schema["properties"]["service"]["default"] == {"url": "http://svc", "api_token": MASK}
    assert schema["properties"]["mirrors"]["default"] == [{"url": "http://m", "api_token": MASK}]
    assert "tok-default" not in json.dumps(schema)
