"""Signing keys, tokens and a real JWKS HTTP server (stdlib, loopback, its own thread) for jwt tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

SECRET = "an-hmac-secret-of-at-least-32-bytes!"
ISSUER = "https://issuer.test"
AUDIENCE = "notes-api"


@dataclass(frozen=True)
class SigningKey:
    """A private key, its public PEM and its JWK (with ``kid``)."""

    kid: str
    algorithm: str
    private: PrivateKeyTypes
    public_pem: str
    jwk: dict[str, Any]


@cache
def signing_key(kid: str, algorithm: str = "RS256") -> SigningKey:
    """A fresh key pair (cached per kid, so a module pays for RSA generation once)."""
    private: PrivateKeyTypes
    if algorithm.startswith("ES"):
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return SigningKey(kid, algorithm, private, pem.decode(), jwk)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for alice, one hour to live; ``name=None`` drops a claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600}
    base["scope"] = "notes:read notes:write"
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def token(key: SigningKey | None = None, *, kid: str | None = "", **overrides: Any) -> str:
    """A token signed with ``key`` (default: HS256 with ``SECRET``); ``kid=None`` leaves the header out."""
    payload = claims(**overrides)
    if key is None:
        return jwt.encode(payload, SECRET, algorithm="HS256")
    headers = {"kid": key.kid if kid == "" else kid} if kid is not None else None
    return jwt.encode(payload, key.private, algorithm=key.algorithm, headers=headers)  # type: ignore[arg-type]  # PyJWT accepts every private key type


def unsigned(**overrides: Any) -> str:
    """An ``alg: none`` token, as an attacker would forge it."""
    return jwt.encode(claims(**overrides), "", algorithm="none")


@dataclass
class JwksServer:
    """Serves ``keys`` as a JWKS at ``url`` and counts the fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    url: str = ""
    status: int = 200


@contextmanager
def jwks_server(*keys: SigningKey) -> Iterator[JwksServer]:
    """A real HTTP server on a free loopback port serving a JWKS (changeable while running)."""
    state = JwksServer(keys=[key.jwk for key in keys])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            payload = json.dumps({"keys": state.keys}).encode()
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test output is for failures."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
