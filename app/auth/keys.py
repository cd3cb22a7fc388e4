"""The server's signing key: a private JWK set on disk, created with mode 0600 when absent.

Access tokens the server issues (`dxf-bridge token`, and the authorization server that will
plug in here) are signed with it; its public half is published at `/.well-known/jwks.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

__all__ = ["SIGNING_ALGORITHMS", "SigningKeys", "load_or_create_signing_keys"]

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


def load_or_create_signing_keys(path: Path) -> tuple[SigningKeys, bool]:
    """Load the key set at `path`, generating it (mode 0600) first if absent.

    Returns the keys and whether they were created now. Refuses a key file other users can read.
    """
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(_generate()).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            created = True
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"signing key file {path} is readable by others (mode {mode:o})")
    keyset = KeySet.import_key_set(json.loads(path.read_text()))
    return SigningKeys(keyset), created
