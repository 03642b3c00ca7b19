"""jwt: every way a token is refused gets 401 with its reason and a Bearer challenge; a valid one sets the principal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from backworks.contracts.envelope import HttpResponse
from backworks.pipeline.configs import validate_config
from backworks.plugins.jwt import Jwt, JwtConfig
from backworks.sdk import PluginHarness, assert_continued, assert_responded, request
from tests.plugins.jwt.tokens import AUDIENCE, ISSUER, SECRET, signing_key, token, unsigned

HS = {"algorithms": ["HS256"], "secret": SECRET, "issuer": ISSUER, "audience": AUDIENCE}


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def refused(response: HttpResponse) -> str:
    """The problem detail of a 401, after checking its shape and challenge."""
    assert response.status == 401
    assert response.header("content-type") == "application/problem+json"
    document: dict[str, Any] = json.loads(response.body)
    assert document["status"] == 401 and document["title"] == "Unauthorized"
    challenge = response.header("www-authenticate") or ""
    assert challenge.startswith('Bearer realm="api"'), challenge
    assert SECRET not in response.model_dump_json()
    detail: str = document["detail"]
    if "error=" in challenge:
        assert f'error="invalid_token", error_description="{detail}"' in challenge
    return detail


async def test_a_valid_hs256_token_sets_consumer_scopes_and_claims() -> None:
    async with PluginHarness(Jwt, HS) as harness:
        envelope = assert_continued(await harness.request(headers=bearer(token())))
    principal = envelope.principal
    assert principal is not None
    assert (principal.consumer, principal.kind) == ("alice", "jwt")
    assert principal.scopes == ["notes:read", "notes:write"], "space-separated scope string"
    assert principal.claims["iss"] == ISSUER
    (decision,) = envelope.annotations["security"]
    assert (decision["decision"], decision["plugin"], decision["consumer"]) == ("allowed", "jwt", "alice")


async def test_scopes_may_be_a_list_under_another_claim_and_the_consumer_another_claim() -> None:
    config = {**HS, "scopes_claim": "permissions", "consumer_claim": "client_id"}
    async with PluginHarness(Jwt, config) as harness:
        signed = token(permissions=["notes:read", "admin"], client_id="svc-7")
        envelope = assert_continued(await harness.request(headers=bearer(signed)))
    assert envelope.principal is not None
    assert (envelope.principal.consumer, envelope.principal.scopes) == ("svc-7", ["notes:read", "admin"])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: token(exp=int(time.time()) - 60), "token expired"),
        (lambda: token(nbf=int(time.time()) + 600), "token not valid yet (nbf)"),
        (lambda: token(aud="another-api"), "wrong audience: the token is not for this API"),
        (lambda: token(iss="https://evil.test"), "wrong issuer"),
        (lambda: token()[:-6] + "AAAAAA", "bad signature"),
        (lambda: unsigned(), "algorithm 'none' is not allowed (allowed: HS256)"),
        (lambda: token(signing_key("rs")), "algorithm 'RS256' is not allowed (allowed: HS256)"),
        (lambda: "not.a.jwt", "malformed token"),
        (lambda: "garbage", "malformed token"),
        (lambda: token(exp=None), "token has no 'exp' claim"),
        (lambda: token(sub=None), "token has no 'sub' claim naming the caller"),
    ],
    ids=[
        "expired",
        "not-yet",
        "audience",
        "issuer",
        "signature",
        "alg-none",
        "alg-other",
        "malformed",
        "garbage",
        "no-exp",
        "no-sub",
    ],
)
async def test_each_refusal_says_why(make: Any, expected: str) -> None:
    async with PluginHarness(Jwt, HS) as harness:
        response = assert_responded(await harness.request(headers=bearer(make())), status=401)
    assert refused(response) == expected
    assert 'error="invalid_token"' in (response.header("www-authenticate") or "")


async def test_leeway_accepts_a_token_expired_within_it() -> None:
    recently = token(exp=int(time.time()) - 5)
    async with PluginHarness(Jwt, {**HS, "leeway_s": 60}) as harness:
        assert_continued(await harness.request(headers=bearer(recently)))


async def test_a_missing_or_non_bearer_token_gets_a_challenge_without_error() -> None:
    async with PluginHarness(Jwt, HS) as harness:
        missing = assert_responded(await harness.request(), status=401)
        basic = assert_responded(await harness.request(headers={"authorization": "Basic YTpi"}), status=401)
    assert refused(missing) == "missing token: send it in the 'authorization' header as `Bearer <token>`"
    assert missing.header("www-authenticate") == 'Bearer realm="api"'
    assert refused(basic) == "the 'authorization' header is not `Bearer <token>`"
    assert basic.header("www-authenticate") == 'Bearer realm="api"', "no credentials of ours: no error code (RFC 6750)"


async def test_the_token_may_come_from_another_header_or_the_query() -> None:
    config = {**HS, "header": "x-token", "query": "access_token", "hide_credentials": True}
    async with PluginHarness(Jwt, config) as harness:
        from_header = assert_continued(await harness.request(headers={"x-token": token()}))
        from_query = assert_continued(await harness.request(query={"access_token": token()}))
    assert from_header.principal is not None and from_query.principal is not None
    assert from_header.header("x-token") is None and from_query.query_param("access_token") is None
    assert Jwt.credentials(JwtConfig.model_validate(config)).headers == ("x-token",)


async def test_rs256_with_an_inline_pem_and_es256_with_a_pem_file(tmp_path: Path) -> None:
    rsa, ecdsa = signing_key("rs"), signing_key("es", "ES256")
    async with PluginHarness(Jwt, {"algorithms": ["RS256"], "public_key": rsa.public_pem}) as harness:
        assert_continued(await harness.request(headers=bearer(token(rsa))))
        other = signing_key("rs-other")
        assert refused(assert_responded(await harness.request(headers=bearer(token(other))))) == "bad signature"
    pem = tmp_path / "es.pem"
    pem.write_text(ecdsa.public_pem)
    async with PluginHarness(Jwt, {"algorithms": ["ES256"], "public_key": f"file:{pem}"}) as harness:
        assert_continued(await harness.request(headers=bearer(token(ecdsa))))


async def test_an_hs256_token_signed_with_the_public_key_is_refused() -> None:
    """The classic algorithm confusion: the public key used as an HMAC secret."""
    import hashlib
    import hmac
    from base64 import urlsafe_b64encode

    rsa = signing_key("rs")

    def b64(data: bytes) -> str:
        return urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode())
    signature = hmac.new(rsa.public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{head}.{body}.{b64(signature)}"
    async with PluginHarness(Jwt, {"algorithms": ["RS256"], "public_key": rsa.public_pem}) as harness:
        response = assert_responded(await harness.request(headers=bearer(forged)), status=401)
    assert refused(response) == "algorithm 'HS256' is not allowed (allowed: RS256)"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"algorithms": ["HS256"]}, "set exactly one of `secret`, `public_key` or `jwks_url` (given: none)"),
        ({**HS, "jwks_url": "https://idp.test/jwks"}, "(given: secret, jwks_url)"),
        ({"algorithms": ["RS256"], "secret": SECRET}, "RS256 need `public_key` or `jwks_url`, not `secret`"),
        ({"algorithms": ["HS256"], "jwks_url": "https://idp.test/jwks"}, "HS256 need `secret`"),
        ({"algorithms": ["HS256", "RS256"], "secret": SECRET}, "mixes HMAC (HS256) and public-key (RS256)"),
        ({"algorithms": ["none"], "secret": SECRET}, "'none' is not one of"),
        ({"algorithms": [], "secret": SECRET}, "should be non-empty"),
        ({"algorithms": ["RS256"], "public_key": "hello"}, "not a PEM public key"),
        ({"algorithms": ["RS256"], "public_key": "file:/nonexistent/key.pem"}, "cannot read public key file"),
        ({"algorithms": ["RS256"], "jwks_url": "ftp://idp.test/jwks"}, "is not an http(s) URL"),
        ({**HS, "header": None}, "set `header` or `query`"),
        ({"algorithms": ["HS256"], "secret": "short"}, "`secret` is too short for HS256: use at least 32 random bytes"),
        ({"algorithms": ["HS256", "HS512"], "secret": SECRET}, "`secret` is too short for HS512: use at least 64"),
    ],
)
def test_invalid_configs_say_what_is_wrong(config: dict[str, Any], expected: str) -> None:
    model, problems = validate_config(JwtConfig, config)
    assert model is None
    assert any(expected in problem.message for problem in problems), problems
    assert all(SECRET not in problem.message for problem in problems)


def test_the_secret_is_masked_and_the_public_key_is_not() -> None:
    from backworks.pipeline.configs import fields_of

    secret = {field.name: field.secret for field in fields_of(JwtConfig)}
    assert secret["secret"] is True and secret["public_key"] is False and secret["jwks_url"] is False


async def test_an_authorization_header_from_another_scheme_falls_back_to_the_query() -> None:
    async with PluginHarness(Jwt, {**HS, "query": "access_token"}) as harness:
        envelope = assert_continued(
            await harness.request(request(headers={"authorization": "Basic YTpi"}, query={"access_token": token()}))
        )
    assert envelope.principal is not None


def test_the_secret_may_be_read_from_a_file_next_to_the_blueprint(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret.txt").write_text(f"{SECRET}\n")  # the trailing newline an editor adds is stripped
    keyless = {name: value for name, value in HS.items() if name != "secret"}
    model, problems = validate_config(JwtConfig, {**keyless, "secret_file": "jwt-secret.txt"}, tmp_path)
    assert problems == [] and isinstance(model, JwtConfig)
    assert model.secret is not None and model.secret.get_secret_value() == SECRET
    missing, problems = validate_config(JwtConfig, {**keyless, "secret_file": "nowhere.txt"}, tmp_path)
    assert missing is None
    assert any("cannot read file 'nowhere.txt'" in problem.message for problem in problems), problems
    both, problems = validate_config(JwtConfig, {**HS, "secret_file": "jwt-secret.txt"}, tmp_path)
    assert both is None and any("not both" in problem.message for problem in problems), problems
