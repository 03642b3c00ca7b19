"""What the plugins of an endpoint's chain add to its OpenAPI operation: security, parameters, body and problems.

- ``api-key``: an ``apiKey`` security scheme per place the key is read from (header, query); 401.
- ``jwt``: an ``http`` ``bearer`` scheme (``bearerFormat: JWT``) for ``Authorization: Bearer``, an ``apiKey``
  scheme for another header or a query parameter; 401.
- ``authorize``: the scopes it requires, listed in the operation's security requirements; 403.
- ``rate-limit``: 429 with ``Retry-After``.
- ``validate``: the query, path and header parameters and the JSON request body it checks (whatever the source:
  inline, ``{file: ...}`` or ``openapi`` + ``operation``: the rules the plugin compiled are described, so the
  document and the checks cannot disagree); 422, and 400/415 when it checks a body.
- ``transform``: 400 and 415 (a body it cannot edit).

Security plugins in one chain must all pass, so their requirements are combined (a requirement per combination
of their alternatives); a plugin reading its credential from a header or a query parameter offers two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.plugins.api_key.config import ApiKeyConfig
from backworks.plugins.authorize.config import AuthorizeConfig
from backworks.plugins.jwt.config import JwtConfig
from backworks.plugins.rate_limit.config import RateLimitConfig
from backworks.plugins.transform.config import TransformConfig
from backworks.plugins.validate.config import ValidateConfig
from backworks.plugins.validate.rules import Location, Rules
from backworks.plugins.validate.schemas import lookup

__all__ = ["Described", "describe", "inline_schema"]

JSON_MEDIA = "application/json"
LOCATIONS = {Location.PATH: "path", Location.QUERY: "query", Location.HEADERS: "header"}
IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
"""Header parameters OpenAPI 3.1 does not allow to describe (other fields of the document do)."""
DROPPED_KEYWORDS = ("$schema", "$id", "$defs", "definitions")
"""Keywords of a schema's root that mean nothing once it is embedded (its references are inlined first)."""
AUTH_HEADER = "authorization"
UNAUTHORIZED = "The request has no valid credentials (`{name}`)."
FORBIDDEN = "The caller may not call this endpoint (`{name}`: scopes {scopes}, consumers {consumers})."
TOO_MANY = "Over the rate limit of {limit} requests per {window} s (`{name}`, by {by}); see `Retry-After`."
INVALID = "The request does not match its schemas (`{name}`): the `errors` member lists the violations."
MALFORMED = "The request body is not valid JSON (`{name}`)."
UNSUPPORTED = "The request body is not JSON (`{name}`)."
RESPONSE_HEADERS: dict[str, dict[str, dict[str, Any]]] = {
    "401": {"WWW-Authenticate": {"description": "The challenge.", "schema": {"type": "string"}}},
    "429": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 0}}},
}


@dataclass
class Described:
    """What a chain adds to an operation."""

    schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Security schemes (``components.securitySchemes``) by name."""
    security: list[dict[str, list[str]]] = field(default_factory=list)
    """Alternative security requirements; empty: the operation is public."""
    parameters: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Parameter objects by (``in``, name)."""
    body: dict[str, Any] | None = None
    """The request body object, when a ``validate`` stage checks the body."""
    problems: dict[str, str] = field(default_factory=dict)
    """Problem responses the chain can answer: status -> description."""

    def add_problem(self, status: int, description: str) -> None:
        key = str(status)
        self.problems[key] = f"{self.problems[key]} Or: {description}" if key in self.problems else description


def inline_schema(schema: Any, root: Any) -> Any:
    """``schema`` with every local ``$ref`` (into ``root``) replaced by what it points to, ready to embed.

    A circular reference is replaced by ``{}`` (any value) at the point where it would recur.
    """

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#"):
            rest = {key: walk(value, seen) for key, value in node.items() if key != "$ref"}
            try:
                target = {} if reference in seen else walk(lookup(root, reference[1:]), (*seen, reference))
            except KeyError:
                target = {}
            if isinstance(target, dict):
                target = {key: value for key, value in target.items() if key not in DROPPED_KEYWORDS}
            return {"allOf": [target], **rest} if rest else target
        return {key: walk(value, seen) for key, value in node.items()}

    result = walk(schema, ())
    if isinstance(result, dict):
        return {key: value for key, value in result.items() if key not in DROPPED_KEYWORDS}
    return True if result is None else result


def _api_key(described: Described, name: str, config: ApiKeyConfig) -> list[dict[str, list[str]]]:
    alternatives: list[dict[str, list[str]]] = []
    for place, value in (("header", config.header), ("query", config.query)):
        if value is None:
            continue
        scheme = name if place == "header" or config.header is None else f"{name}-query"
        described.schemes[scheme] = {
            "type": "apiKey",
            "in": place,
            "name": value,
            "description": f"An API key (`{name}`); keys are issued by the API's operators.",
        }
        alternatives.append({scheme: []})
    described.add_problem(401, UNAUTHORIZED.format(name=name))
    return alternatives


def _jwt(described: Described, name: str, config: JwtConfig) -> list[dict[str, list[str]]]:
    alternatives: list[dict[str, list[str]]] = []
    algorithms = ", ".join(algorithm.value for algorithm in config.algorithms)
    what = f"A JWT (`{name}`) signed with {algorithms}"
    if config.header is not None:
        bearer = config.header.lower() == AUTH_HEADER and (config.effective_scheme or "").lower() == "bearer"
        if bearer:
            described.schemes[name] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": what}
        else:
            described.schemes[name] = {"type": "apiKey", "in": "header", "name": config.header, "description": what}
        alternatives.append({name: []})
    if config.query is not None:
        scheme = f"{name}-query" if config.header is not None else name
        described.schemes[scheme] = {"type": "apiKey", "in": "query", "name": config.query, "description": what}
        alternatives.append({scheme: []})
    described.add_problem(401, UNAUTHORIZED.format(name=name))
    return alternatives


def _validate(described: Described, name: str, rules: Rules) -> None:
    for param in rules.params:
        place = LOCATIONS[param.location]
        if place == "header" and param.name in IGNORED_HEADERS:
            continue
        parameter: dict[str, Any] = {"name": param.name, "in": place, "required": param.required}
        parameter["schema"] = inline_schema(param.schema, param.root) if param.schema is not None else {}
        described.parameters[(place, param.name)] = parameter
    described.add_problem(422, INVALID.format(name=name))
    if rules.body is not None:
        schema = inline_schema(rules.body_schema, rules.body_root) if rules.body_schema is not None else {}
        described.body = {"required": rules.body_required, "content": {JSON_MEDIA: {"schema": schema}}}
        described.add_problem(400, MALFORMED.format(name=name))
        described.add_problem(415, UNSUPPORTED.format(name=name))


def _combine(
    current: list[dict[str, list[str]]], alternatives: list[dict[str, list[str]]]
) -> list[dict[str, list[str]]]:
    """Requirements met when ``current`` and one of ``alternatives`` are (every stage must pass)."""
    if not current:
        return [dict(item) for item in alternatives]
    return [{**left, **right} for left in current for right in alternatives]


def describe(loaded: LoadedBlueprint, chain: list[str]) -> Described:
    """What the instances of ``chain`` (in order) add to an operation."""
    described = Described()
    scopes: list[str] = []
    for name in chain:
        config = loaded.instances[name].config
        if isinstance(config, ApiKeyConfig):
            described.security = _combine(described.security, _api_key(described, name, config))
        elif isinstance(config, JwtConfig):
            described.security = _combine(described.security, _jwt(described, name, config))
        elif isinstance(config, AuthorizeConfig):
            scopes.extend(scope for scope in config.scopes if scope not in scopes)
            described.add_problem(403, FORBIDDEN.format(name=name, scopes=config.scopes or "any",
                                                        consumers=config.consumers or "any"))  # fmt: skip
        elif isinstance(config, RateLimitConfig):
            window = f"{config.window_s:g}"
            described.add_problem(
                429, TOO_MANY.format(limit=config.limit, window=window, name=name, by=config.by.value)
            )
        elif isinstance(config, ValidateConfig):
            _validate(described, name, config.rules)
        elif isinstance(config, TransformConfig):
            described.add_problem(400, f"The request cannot be transformed (`{name}`).")
            described.add_problem(415, UNSUPPORTED.format(name=name))
    if scopes:  # OpenAPI 3.1 lets any scheme's requirement list the roles (here: scopes) it needs
        described.security = [{scheme: list(scopes) for scheme in item} for item in described.security]
    return described
