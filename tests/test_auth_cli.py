"""The `dxf-bridge clients`, `users` and `launch` commands."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from app.auth.registry import ClientRegistry, UserRegistry
from app.cli import main
from app.db import Database
from app.migrate import upgrade
from app.store.tables import oauth_user
from tests.oauth import public_jwks, rsa_key


@pytest.fixture
async def env(tmp_path, monkeypatch, key_file):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = Database(url)
    await upgrade(db)
    monkeypatch.setenv("DXF_DATABASE_URL", url)
    monkeypatch.setenv("DXF_SIGNING_KEY_FILE", str(key_file))
    monkeypatch.setenv("DXF_BASE_URL", "https://fhir.example.org")
    yield db
    await db.dispose()


def _run(*argv):
    import asyncio

    return asyncio.get_running_loop().run_in_executor(None, main, list(argv))


async def test_clients_add_list_disable(env, tmp_path, capsys):
    jwks_file = tmp_path / "client.jwks"
    jwks_file.write_text(json.dumps(public_jwks(rsa_key())))
    assert (
        await _run(
            "clients",
            "add",
            "--client-id",
            "qhio",
            "--scope",
            "system/*.rs",
            "--jwks-file",
            str(jwks_file),
        )
        == 0
    )
    assert (
        await _run(
            "clients",
            "add",
            "--client-id",
            "app",
            "--scope",
            "launch patient/*.rs",
            "--public",
            "--redirect-uri",
            "https://app.example.org/cb",
        )
        == 0
    )
    assert (
        await _run(
            "clients",
            "add",
            "--client-id",
            "hg",
            "--scope",
            "system/*.rs",
            "--jwks-url",
            "https://hg.example.org/jwks",
        )
        == 0
    )
    # refused: a private key, an http URL, a confidential client without keys, a duplicate
    private = tmp_path / "private.jwks"
    private.write_text(json.dumps({"keys": [rsa_key().as_dict(private=True)]}))
    assert (
        await _run(
            "clients",
            "add",
            "--client-id",
            "x",
            "--scope",
            "system/*.rs",
            "--jwks-file",
            str(private),
        )
        == 2
    )
    assert (
        await _run(
            "clients",
            "add",
            "--client-id",
            "y",
            "--scope",
            "system/*.rs",
            "--jwks-url",
            "http://evil.example.org/jwks",
        )
        == 2
    )
    assert await _run("clients", "add", "--client-id", "z", "--scope", "system/*.rs") == 2
    assert (
        await _run(
            "clients",
            "add",
            "--client-id",
            "qhio",
            "--scope",
            "system/*.rs",
            "--jwks-file",
            str(jwks_file),
        )
        == 2
    )
    assert await _run("clients", "disable", "--client-id", "qhio") == 0
    assert await _run("clients", "disable", "--client-id", "nobody") == 1
    capsys.readouterr()
    assert await _run("clients", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in out] == [
        ["app", "enabled"],
        ["hg", "enabled"],
        ["qhio", "disabled"],
    ]
    client = await ClientRegistry(env).get("qhio")
    assert client is not None and client.disabled and client.jwks is not None


async def test_users_add_hashes_the_password(env, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert await _run("users", "add", "--username", "dr", "--fhir-user", "Practitioner/p1") == 0
    async with env.read() as conn:
        row = (await conn.execute(select(oauth_user))).one()
    assert row.password_hash.startswith("scrypt$") and "a long enough" not in row.password_hash
    users = UserRegistry(env)
    assert (await users.authenticate("dr", "a long enough password")).fhir_user == "Practitioner/p1"
    assert await users.authenticate("dr", "a long enough passworD") is None
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert await _run("users", "add", "--username", "weak") == 2


async def test_launch_prints_a_launch_value(env, capsys):
    assert await _run("launch", "--patient", "p1", "--encounter", "e1") == 0
    value = capsys.readouterr().out.strip()
    assert value.count(".") == 2
    assert await _run("launch", "--patient", "p1", "--ttl", "0") == 2


def test_key_rotation(tmp_path, monkeypatch, capsys):
    """Rotate: the new key signs, tokens of the old key still verify; retire: they stop."""
    from app.auth.keys import load_or_create_signing_keys
    from app.auth.tokens import TokenValidator, issue_token
    from app.errors import Unauthenticated

    path = tmp_path / "keys.json"
    monkeypatch.setenv("DXF_SIGNING_KEY_FILE", str(path))
    old_keys, _ = load_or_create_signing_keys(path)
    old_token = issue_token(old_keys, issuer="https://i", audience="https://a", scope="x")
    assert main(["keys", "rotate"]) == 0
    new_keys, _ = load_or_create_signing_keys(path)
    assert new_keys.kid != old_keys.kid and len(new_keys.keyset.keys) == 2
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    def validator(keys):
        return TokenValidator(keys, issuer="https://i", audience="https://a")

    assert validator(new_keys).authenticate(f"Bearer {old_token}").scopes == ("x",)
    new_token = issue_token(new_keys, issuer="https://i", audience="https://a", scope="y")
    assert new_token.split(".")[0] != old_token.split(".")[0]  # a different kid in the header
    assert main(["keys", "retire", f"--kid={new_keys.kid}"]) == 2  # never the current key
    assert main(["keys", "retire", f"--kid={old_keys.kid}"]) == 0  # kids may start with -
    retired, _ = load_or_create_signing_keys(path)
    with pytest.raises(Unauthenticated):
        validator(retired).authenticate(f"Bearer {old_token}")
    assert validator(retired).authenticate(f"Bearer {new_token}").scopes == ("y",)
    capsys.readouterr()
    assert main(["keys", "list"]) == 0
    assert capsys.readouterr().out.split() == [new_keys.kid]
