"""Recorded requests (``BW_RECORD``) and the switch that turns recording on (``bw_record`` KV).

``backworks record`` writes a ``RecordingSwitch`` under the endpoint's name in the ``bw_record`` bucket; every
gateway watches the bucket and, while the switch is on and not past ``until``, copies a sample of that endpoint's
requests into ``BW_RECORD`` as ``Recording`` messages: the envelope as the gateway sent it and the response the
client got. ``backworks replay`` reads them back and runs them through another plugin instance.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backworks.contracts.envelope import Envelope
from backworks.contracts.types import Headers

RECORDING_VERSION: Literal[1] = 1

_MODEL_CONFIG = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


class RecordingSwitch(BaseModel):
    """Value of the key ``<endpoint>`` in ``bw_record``: record that endpoint's requests until ``until``."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = RECORDING_VERSION
    session: str = Field(pattern=r"^[a-z0-9]{1,32}$", description="Names this recording; a subject token.")
    endpoint: str
    sample: float = Field(gt=0, le=1, description="Share of requests recorded (1.0: every request).")
    started_at: float
    until: float
    """Unix time after which gateways stop recording by themselves, even if nobody switches the recording off."""

    def active(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.until


class RecordedResponse(BaseModel):
    """The response the client got, as the gateway sent it."""

    model_config = _MODEL_CONFIG

    status: int
    headers: Headers
    """Credentials (``set-cookie``…) masked; the real values are in the recording's seal."""
    body: bytes
    """The body, cut at the gateway's recording bound (``body_truncated`` says so)."""
    body_bytes: int
    """Length of the whole body."""
    body_sha256: str
    """SHA-256 (hex) of the whole body: what a replay compares when the body was cut."""
    body_truncated: bool = False


class Recording(BaseModel):
    """One recorded request (``bw.rec.<endpoint>.<session>``): what the gateway sent down the pipeline and what
    it answered. Credentials are handled as in a dead letter: masked in ``envelope`` and ``response.headers``, and
    the originals sealed with the deployment's dead-letter key in ``sealed`` (or not kept: ``credentials_dropped``).
    """

    model_config = _MODEL_CONFIG

    v: Literal[1] = RECORDING_VERSION
    session: str
    endpoint: str
    recorded_at: float
    envelope: Envelope
    """The envelope as the gateway handed it to the pipeline (credentials masked)."""
    response: RecordedResponse
    total_ms: float
    """What the request took at the gateway, from receipt to response."""
    sealed: str | None = None
    """The request headers and query and the response headers as they were, encrypted (Fernet) with the
    dead-letter key."""
    credentials_dropped: bool = False
    """The request carried credentials and there was no key to seal them with: they were not kept."""
