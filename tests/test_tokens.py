"""Access-token validation: only well-formed, unexpired tokens signed by our key pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.auth.keys import load_or_create_signing_keys
from app.auth.tokens import MAX_TOKEN_BYTES, TokenValidator, issue_token
from app.errors import Unauthenticated
from tests.conftest import BASE_URL, FHIR_BASE, bearer
from tests.factories import patient


@pytest.fixture
def keys(key_file):
    return load_or_create_signing_keys(key_file)[0]


@pytest.fixture
def validator(keys):
    return TokenValidator(keys, issuer=BASE_URL, audience=FHIR_BASE, leeway_seconds=30)


def _token(keys, **kw):
    return issue_token(keys, issuer=BASE_URL, audience=FHIR_BASE, scope="system/*.rs", **kw)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _hs256(header: dict, claims: dict, secret: bytes) -> str:
    """The key-confusion attack: HMAC-sign with the server's public key as the secret."""
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _claims(**over):
    now = int(time.time())
    claims = {
        "iss": BASE_URL,
        "aud": FHIR_BASE,
        "sub": "x",
        "exp": now + 300,
        "iat": now,
        "scope": "system/*.rs",
    }
    claims.update(over)
    return claims


def test_valid_token(validator, keys):
    principal = validator.authenticate(f"Bearer {_token(keys, patient='p1')}")
    assert principal.scopes == ("system/*.rs",)
    assert principal.policy.patient == "p1"


def _hostile(keys):
    good = _token(keys)
    header, payload, sig = good.split(".")
    now = int(time.time())
    other = RSAKey.generate_key(2048, parameters={"kid": keys.kid})
    pub = keys.current.as_pem(private=False)
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    embedded = RSAKey.generate_key(2048)
    return {
        "alg none": f"{_b64({'alg': 'none', 'kid': keys.kid})}.{payload}.",
        "HS256 with public key": _hs256({"alg": "HS256", "kid": keys.kid}, _claims(), pub),
        "embedded jwk": jwt.encode(
            {"alg": "RS256", "jwk": embedded.as_dict(private=False)}, _claims(), embedded
        ),
        "unknown kid": jwt.encode({"alg": "RS256", "kid": "nope"}, _claims(), other),
        "other key same kid": jwt.encode(
            {"alg": "RS256", "kid": keys.kid}, _claims(scope="system/*.cruds"), other
        ),
        "expired": _token(keys, now=now - 7200, ttl_seconds=60),
        "not yet valid": jwt.encode(
            {"alg": "RS256", "kid": keys.kid}, _claims(nbf=now + 3600), keys.current
        ),
        "wrong issuer": issue_token(
            keys, issuer="https://evil.example", audience=FHIR_BASE, scope="system/*.rs"
        ),
        "wrong audience": issue_token(
            keys, issuer=BASE_URL, audience="https://other/fhir", scope="system/*.rs"
        ),
        "no exp": jwt.encode(
            {"alg": "RS256", "kid": keys.kid},
            {k: v for k, v in _claims().items() if k != "exp"},
            keys.current,
        ),
        "flipped signature": f"{header}.{payload}.{flipped}",
        "garbage": "not.a.jwt",
        "oversized": "a" * (MAX_TOKEN_BYTES + 1),
    }


def test_hostile_tokens_rejected(validator, keys):
    for name, token in _hostile(keys).items():
        with pytest.raises(Unauthenticated):
            validator.authenticate(f"Bearer {token}")
        assert name


def test_missing_or_non_bearer(validator, keys):
    for header in (None, "", "Basic dXNlcjpwYXNz", "Bearer ", f"Token {_token(keys)}"):
        with pytest.raises(Unauthenticated):
            validator.authenticate(header)


async def test_hostile_tokens_get_401_and_no_data_over_http(client, auth, keys):
    pid = (
        await client.post(
            "/Patient",
            json=patient("t1"),
            headers={**auth, "Content-Type": "application/fhir+json"},
        )
    ).json()["id"]
    paths = [f"/Patient/{pid}", "/Patient", "/Observation", "/Encounter", "/_history"]
    for name, token in {**_hostile(keys), "none": None}.items():
        headers = bearer(token) if token else {}
        for path in paths:
            r = await client.get(path, headers=headers)
            assert r.status_code == 401, (name, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["issue"][0]["code"] == "login"
            assert pid not in r.text


def test_cached_token_stops_working_when_it_expires(keys):
    clock = [time.time()]
    validator = TokenValidator(
        keys, issuer=BASE_URL, audience=FHIR_BASE, leeway_seconds=0, clock=lambda: clock[0]
    )
    token = _token(keys, ttl_seconds=60)
    validator.authenticate(f"Bearer {token}")
    validator.authenticate(f"Bearer {token}")  # served from the cache
    clock[0] += 120
    with pytest.raises(Unauthenticated):
        validator.authenticate(f"Bearer {token}")
