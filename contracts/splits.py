"""Canary splits: an endpoint chain entry that sends each request to one of several instances, by weight.

```yaml
plugins:
  auth-v1: {type: api-key, config: {...}}
  auth-v2: {type: api-key, config: {...}, version: ">=2,<3"}
endpoints:
  notes:
    plugins:
      - auth:                                  # the split's name, unique in the endpoint
          split: {auth-v1: 90, auth-v2: 10}    # branch instance -> weight; the first is the baseline
          sticky: consumer                     # or header:<name>; default: weighted random per request
          rollback: {max_error_rate_increase: 5%, max_p99_increase_ms: 50, window_s: 60, min_calls: 20}
      - limiter
```

The gateway picks one branch per request when it builds the itinerary and records it in the envelope
(``Envelope.branches``). With ``rollback``, the gateway compares each other branch with the baseline over the
window and, past a margin, sends every request of the split to the baseline (stored in the ``bw_splits`` bucket).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from backworks.contracts.names import NAME_PATTERN

STICKY_CONSUMER = "consumer"
STICKY_HEADER_PREFIX = "header:"
STICKY_PATTERN = r"^(consumer|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$"
DEFAULT_ROLLBACK_WINDOW_S = 60.0
DEFAULT_ROLLBACK_MIN_CALLS = 20
INSTANCE_TAG = "<instance>"
SPLIT_TAG = "<split>"
UNION_TAGS = frozenset({INSTANCE_TAG, SPLIT_TAG})
"""Tags of a chain entry's two shapes in validation error locations; no YAML key can be spelled like them."""

_Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def _percent(value: Any) -> Any:
    """``"5%"`` -> ``5.0``: a margin may be written with its unit."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return value.strip()[:-1].strip()
    return value


class SplitRollback(BaseModel):
    """When the gateway returns a split to its baseline on its own: a branch clearly worse than the baseline.

    Over the last ``window_s`` seconds, once the baseline and a branch each have ``min_calls`` responses, the
    split is rolled back if the branch's 5xx rate exceeds the baseline's by more than ``max_error_rate_increase``
    percentage points, or its p99 latency the baseline's by more than ``max_p99_increase_ms``.
    """

    model_config = ConfigDict(extra="forbid")

    max_error_rate_increase: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Percentage points of 5xx responses a branch may have above the baseline (`5%` or `5`).",
    )
    max_p99_increase_ms: float | None = Field(
        default=None, ge=0, description="Milliseconds a branch's p99 latency may exceed the baseline's."
    )
    window_s: float = Field(
        default=DEFAULT_ROLLBACK_WINDOW_S, gt=0, le=3600, description="Seconds of responses compared."
    )
    min_calls: int = Field(
        default=DEFAULT_ROLLBACK_MIN_CALLS,
        ge=1,
        description="Responses the baseline and a branch each need in the window before they are compared.",
    )

    _parse_percent = field_validator("max_error_rate_increase", mode="before")(_percent)

    @model_validator(mode="after")
    def _a_condition(self) -> SplitRollback:
        if self.max_error_rate_increase is None and self.max_p99_increase_ms is None:
            raise ValueError("rollback needs max_error_rate_increase and/or max_p99_increase_ms")
        return self


class Split(BaseModel):
    """One split of a chain: branch instances and their weights, optional stickiness and automatic rollback."""

    model_config = ConfigDict(extra="forbid")

    split: dict[_Name, NonNegativeInt] = Field(
        min_length=1,
        description="Branch instance -> weight (non-negative integers, summing to more than 0). The first branch is "
        "the baseline: the one a rollback returns to.",
    )
    sticky: str | None = Field(
        default=None,
        pattern=STICKY_PATTERN,
        description="`consumer`: the same caller (same credentials, else same client address) always takes the same "
        "branch; `header:<name>`: the same value of that header does. Default: weighted random per request.",
    )
    rollback: SplitRollback | None = Field(
        default=None, description="Return to the baseline automatically when another branch is clearly worse."
    )

    @model_validator(mode="after")
    def _some_weight(self) -> Split:
        if sum(self.split.values()) <= 0:
            raise ValueError("the weights of a split must sum to more than 0")
        return self

    @property
    def baseline(self) -> str:
        return next(iter(self.split))

    @property
    def sticky_header(self) -> str | None:
        """The header a ``header:<name>`` split is sticky by, lower-case."""
        if self.sticky and self.sticky.startswith(STICKY_HEADER_PREFIX):
            return self.sticky[len(STICKY_HEADER_PREFIX) :].lower()
        return None

    def fingerprint(self) -> str:
        """Identifies the split's branches and weights: a rollback recorded for another fingerprint no longer holds."""
        canonical = json.dumps(list(self.split.items()), separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _one_split(value: dict[str, Split]) -> dict[str, Split]:
    if len(value) != 1:
        raise ValueError(
            f"a split entry names exactly one split, e.g. `- auth: {{split: {{auth-v1: 90, auth-v2: 10}}}}`; got "
            f"{len(value)} keys ({', '.join(value) or 'none'})"
        )
    return value


def _entry_kind(value: Any) -> str:
    return SPLIT_TAG if isinstance(value, dict) else INSTANCE_TAG


ChainEntry = Annotated[
    Annotated[str, Tag(INSTANCE_TAG)] | Annotated[dict[_Name, Split], AfterValidator(_one_split), Tag(SPLIT_TAG)],
    Discriminator(_entry_kind),
]
"""One entry of an endpoint's ``plugins``: an instance name, or ``{<split name>: Split}``."""


class RolledBack(BaseModel):
    """A split the gateway returned to its baseline: the value of key ``<endpoint>.<split>`` in ``bw_splits``.

    Every gateway replica (and one restarted) sends the split's requests to ``baseline`` while this record holds:
    until ``backworks split reset`` deletes it, or the blueprint's split changes (another ``fingerprint``).
    """

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    endpoint: str
    split: str
    baseline: str
    branch: str
    """The branch found worse than the baseline."""
    fingerprint: str
    """``Split.fingerprint()`` of the split rolled back."""
    reason: str
    """Why, in words: the measures and the margin they exceeded."""
    measured: dict[str, float] = Field(default_factory=dict)
    """Error rates (%) and p99 latencies (ms) of the baseline and the branch over the window, and call counts."""
    gateway: str = ""
    """The gateway replica that decided."""
    at: float = Field(default_factory=time.time)


def rollback_key(endpoint: str, split: str) -> str:
    """Key of a split's rollback record in ``bw_splits``."""
    return f"{endpoint}.{split}"


def entry_split(entry: str | dict[str, Split]) -> tuple[str, Split] | None:
    """``(split name, split)`` of a split entry, None for an instance name."""
    if isinstance(entry, dict):
        return next(iter(entry.items()))
    return None


__all__ = ["ChainEntry", "RolledBack", "Split", "SplitRollback", "entry_split", "rollback_key"]
