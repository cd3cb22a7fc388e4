"""The hostile-token and cross-patient (BOLA) matrix (reliability.md AUTH-02, AUTH-03, BOLA-01,
BOLA-04, BOLA-06), each probe against Patient, Encounter and Observation.

Every forged or broken token gets 401 and no data. A patient-scoped token probing another
patient's data gets the same answer whether that patient exists or not, and never their data.
"""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.auth.keys import load_or_create_signing_keys
from app.auth.tokens import issue_token
from tests.conftest import BASE_URL, FHIR_BASE, FHIR_JSON, bearer
from tests.factories import encounter, observation, patient
from tests.oauth import flip_signature, hs256, unsigned

TYPES = ("Patient", "Encounter", "Observation")


@pytest.fixture(scope="module")
def attacker():
    return RSAKey.generate_key(2048, auto_kid=True)


@pytest.fixture
def keys(key_file):
    return load_or_create_signing_keys(key_file)[0]


@pytest.fixture
async def world(client, auth):
    ids = {}
    for who in ("me", "other"):
        h = {**auth, **FHIR_JSON}
        pid = (await client.post("/Patient", json=patient(f"mrn-{who}"), headers=h)).json()["id"]
        enc = (await client.post("/Encounter", json=encounter(pid), headers=h)).json()["id"]
        obs = (await client.post("/Observation", json=observation(pid), headers=h)).json()["id"]
        ids[who] = {"Patient": pid, "Encounter": enc, "Observation": obs}
    return ids


def _claims(**over):
    now = int(time.time())
    claims = {
        "iss": BASE_URL,
        "aud": FHIR_BASE,
        "sub": "mallory",
        "iat": now,
        "exp": now + 300,
        "scope": "system/*.cruds",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _ours(keys, claims, **header):
    hdr = {"alg": "RS256", "kid": keys.kid, "typ": "at+jwt", **header}
    return jwt.encode(hdr, claims, keys.current, algorithms=["RS256"])


def _forgeries(keys, attacker):
    public_pem = keys.current.as_pem(private=False)
    genuine_patient = issue_token(
        keys, issuer=BASE_URL, audience=FHIR_BASE, scope="patient/Patient.r", patient="x"
    )
    edited = jwt.decode(genuine_patient, keys.keyset, algorithms=["RS256"]).claims
    edited = {**edited, "scope": "system/*.cruds"}
    edited.pop("patient")
    now = int(time.time())
    return {
        "alg_none": unsigned({"kid": keys.kid}, _claims()),
        "hs256_public_key": hs256({"kid": keys.kid}, _claims(), public_pem),
        "embedded_jwk": jwt.encode(
            {"alg": "RS256", "kid": keys.kid, "jwk": attacker.as_dict(private=False)},
            _claims(),
            attacker,
            algorithms=["RS256"],
        ),
        "unknown_kid": jwt.encode(
            {"alg": "RS256", "kid": "attacker-kid"}, _claims(), attacker, algorithms=["RS256"]
        ),
        "expired_beyond_leeway": _ours(keys, _claims(iat=now - 4000, exp=now - 120)),
        "nbf_in_future": _ours(keys, _claims(nbf=now + 600)),
        "wrong_issuer": _ours(keys, _claims(iss="https://evil.example.org")),
        "wrong_audience": _ours(keys, _claims(aud="https://other.example.org/fhir")),
        "flipped_signature_bit": flip_signature(_ours(keys, _claims())),
        "resigned_with_edited_scopes": jwt.encode(
            {"alg": "RS256", "kid": keys.kid}, edited, attacker, algorithms=["RS256"]
        ),
        "missing_exp": _ours(keys, _claims(exp=None)),
    }


FORGERY_NAMES = [
    "alg_none",
    "hs256_public_key",
    "embedded_jwk",
    "unknown_kid",
    "expired_beyond_leeway",
    "nbf_in_future",
    "wrong_issuer",
    "wrong_audience",
    "flipped_signature_bit",
    "resigned_with_edited_scopes",
    "missing_exp",
]


@pytest.mark.parametrize("name", ["no_token", *FORGERY_NAMES])
async def test_forged_tokens_get_401_and_no_data(client, keys, attacker, world, name):
    headers = {} if name == "no_token" else bearer(_forgeries(keys, attacker)[name])
    for rtype in TYPES:
        rid = world["me"][rtype]
        for path in (f"/{rtype}/{rid}", f"/{rtype}", f"/{rtype}?_id={rid}"):
            r = await client.get(path, headers=headers)
            assert r.status_code == 401, (name, path, r.status_code)
            assert "www-authenticate" in r.headers
            assert rid not in r.text and "Testperson" not in r.text


async def test_oversized_token_is_refused_before_parsing(client, world, monkeypatch):
    """A 10 MB bearer token is refused on its length: the JWS parser never sees it."""
    from app.auth import tokens as tokens_module

    def must_not_parse(*args, **kwargs):
        raise AssertionError("an oversized token reached the JWS parser")

    monkeypatch.setattr(tokens_module.jws, "extract_compact", must_not_parse)
    huge = "e" * (300 * 1024) + "." + "A" * (10 * 1024 * 1024) + ".AAAA"
    for rtype in TYPES:
        r = await client.get(f"/{rtype}", headers=bearer(huge))
        assert r.status_code == 401 and "too large" in r.text


def _probes(rtype, ids):
    """(method, path, body) probes of one type against the patient whose ids are given."""
    pid, rid = ids["Patient"], ids[rtype]
    ref = "subject" if rtype != "Patient" else "_id"
    value = f"Patient/{pid}" if rtype != "Patient" else pid
    probes = [
        ("GET", f"/{rtype}/{rid}", None),
        ("GET", f"/{rtype}/{rid}/_history/1", None),
        ("GET", f"/{rtype}/{rid}/_history", None),
        ("GET", f"/{rtype}?_id={rid}", None),
        ("GET", f"/{rtype}?{ref}={value}", None),
        ("POST", f"/{rtype}/_search", f"_id={rid}"),
        ("GET", f"/Patient/{pid}/$everything", None),
    ]
    if rtype != "Patient":
        probes += [
            ("GET", f"/{rtype}?patient={pid}", None),
            ("GET", f"/{rtype}?subject:Patient.identifier=mrn-x", None),
            ("GET", f"/{rtype}?_include={rtype}:subject&_id={rid}", None),
        ]
    else:
        probes.append(("GET", f"/Patient?_revinclude=Observation:subject&_id={pid}", None))
    return probes


def _mask(text, ids):
    for rtype, rid in ids.items():
        text = text.replace(rid, f"<{rtype}>")
    return text


def _ghost(ids):
    return {t: f"ghost-{t.lower()}" for t in ids}


@pytest.mark.parametrize("rtype", TYPES)
async def test_patient_token_cannot_reach_another_patient(client, make_token, world, rtype):
    me, other = world["me"], world["other"]
    token = bearer(make_token("patient/*.rs", patient=me["Patient"]))
    for (method, path, body), (_, ghost_path, ghost_body) in zip(
        _probes(rtype, other), _probes(rtype, _ghost(other)), strict=True
    ):
        headers = {**token, "Content-Type": "application/x-www-form-urlencoded"}
        real = await client.request(method, path, content=body, headers=headers)
        ghost = await client.request(method, ghost_path, content=ghost_body, headers=headers)
        assert real.status_code == ghost.status_code, (path, real.status_code, ghost.status_code)
        assert real.status_code in (200, 400, 403, 404), (path, real.status_code)
        if real.status_code == 200:
            entries = real.json().get("entry", [])
            assert {e["resource"]["id"] for e in entries} <= set(me.values()), path
        # the same answer, byte for byte, once the ids the caller typed are masked
        assert _mask(real.text, other) == _mask(ghost.text, _ghost(other)), path
        assert "mrn-other" not in real.text and "Testperson" not in real.text


@pytest.mark.parametrize("rtype", ("Encounter", "Observation"))
async def test_writes_into_another_compartment_are_403_and_change_nothing(
    client, make_token, auth, world, rtype
):
    me, other = world["me"], world["other"]
    token = {**bearer(make_token("patient/*.cruds", patient=me["Patient"])), **FHIR_JSON}
    build = encounter if rtype == "Encounter" else observation
    before = (await client.get(f"/{rtype}/{other[rtype]}", headers=auth)).json()
    assert (
        await client.post(f"/{rtype}", json=build(other["Patient"]), headers=token)
    ).status_code == 403
    hijack = {**before, "status": before["status"]}
    r = await client.put(f"/{rtype}/{other[rtype]}", json=hijack, headers=token)
    assert r.status_code == 403
    r = await client.put(
        f"/{rtype}?_id={other[rtype]}", json=build(other["Patient"]), headers=token
    )
    assert r.status_code == 403 and other[rtype] not in r.text
    assert (await client.delete(f"/{rtype}/{other[rtype]}", headers=token)).status_code == 403
    after = (await client.get(f"/{rtype}/{other[rtype]}", headers=auth)).json()
    assert after["meta"]["versionId"] == before["meta"]["versionId"] == "1"
    everything = (await client.get(f"/{rtype}?_count=100", headers=auth)).json()["entry"]
    assert len(everything) == 2  # nothing created


@pytest.mark.parametrize("rtype", TYPES)
async def test_read_only_scopes_never_write(client, make_token, auth, world, rtype):
    me = world["me"]
    for scope in (f"patient/{rtype}.rs", f"system/{rtype}.rs", "user/*.read"):
        token = {**bearer(make_token(scope, patient=me["Patient"])), **FHIR_JSON}
        current = (await client.get(f"/{rtype}/{me[rtype]}", headers=auth)).json()
        assert (
            await client.put(f"/{rtype}/{me[rtype]}", json=current, headers=token)
        ).status_code == 403
        assert (await client.delete(f"/{rtype}/{me[rtype]}", headers=token)).status_code == 403
        assert (await client.post(f"/{rtype}", json=current, headers=token)).status_code == 403
    after = (await client.get(f"/{rtype}/{me[rtype]}", headers=auth)).json()
    assert after["meta"]["versionId"] == "1"
