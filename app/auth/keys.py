"""The server's signing key: a private JWK set on disk, created with mode 0600 when absent.

Access tokens the server issues (`dxf-bridge token` and the authorization server) are signed
with it; its public half is published at `/.well-known/jwks.json`.

Rotation (`dxf-bridge keys rotate`): a new key is put first in the file, so it signs from the
next start on, and the old keys stay to verify the tokens they signed until those expire; then
`dxf-bridge keys retire --kid=OLD` removes one. The server reads the file at start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

__all__ = [
    "SIGNING_ALGORITHMS",
    "SigningKeys",
    "load_or_create_signing_keys",
    "retire_signing_key",
    "rotate_signing_keys",
]

# The only algorithms the server signs with or accepts for its own tokens.
SIGNING_ALGORITHMS: tuple[str, ...] = ("RS256",)


class SigningKeys:
    """The private key set; the first key signs, every key verifies (rotation keeps old ones)."""

    def __init__(self, keyset: KeySet) -> None:
        if not keyset.keys:
            raise ValueError("the signing key file holds no key")
        self.keyset = keyset
        self.current = keyset.keys[0]

    @property
    def kid(self) -> str:
        return str(self.current.kid)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keyset.keys]}


def _generate() -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)
    return {"keys": [key.as_dict(private=True)]}


def _write_new(path: Path, data: bytes) -> bool:
    """Write a complete file, then link it into place: a concurrent reader never sees half a
    key, and if another process got there first its key wins. Returns whether ours was used."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def load_or_create_signing_keys(path: Path) -> tuple[SigningKeys, bool]:
    """Load the key set at `path`, generating it (mode 0600) first if absent.

    Returns the keys and whether they were created now. Refuses a key file other users can read.
    """
    created = False
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = _write_new(path, json.dumps(_generate()).encode())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"signing key file {path} has mode {mode:o}; it must be 600 (owner only)"
        )
    keyset = KeySet.import_key_set(json.loads(path.read_text()))
    return SigningKeys(keyset), created


def _replace(path: Path, data: dict[str, Any]) -> None:
    """Write the whole key set to a new 0600 file, then rename it over the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.rotate")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps(data).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rotate_signing_keys(path: Path) -> str:
    """Add a new signing key in front of the existing ones; returns its kid."""
    keys, _ = load_or_create_signing_keys(path)
    new = _generate()["keys"][0]
    _replace(path, {"keys": [new, *(k.as_dict(private=True) for k in keys.keyset.keys)]})
    return str(new["kid"])


def retire_signing_key(path: Path, kid: str) -> None:
    """Remove an old key. The current (first) key cannot be retired."""
    keys, _ = load_or_create_signing_keys(path)
    if kid == keys.kid:
        raise ValueError("that is the current signing key; rotate first")
    remaining = [k.as_dict(private=True) for k in keys.keyset.keys if str(k.kid) != kid]
    if len(remaining) == len(keys.keyset.keys):
        raise ValueError(f"no key with kid {kid!r}")
    _replace(path, {"keys": remaining})
