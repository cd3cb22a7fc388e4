"""Password hashing for app-launch users: scrypt (RFC 7914) from the standard library.

scrypt is memory-hard and in `hashlib`, so no dependency is needed. The parameters are one of
OWASP's equal-strength scrypt settings (N=2^15, r=8, p=3) and are stored with each hash, so they
can be raised later without invalidating existing passwords.
Format: `scrypt$N$r$p$<salt b64>$<hash b64>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["DUMMY_HASH", "hash_password", "verify_password"]

_N, _R, _P = 2**15, 8, 3
_LEN = 32
_MAXMEM = 128 * 1024 * 1024


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_LEN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password may not be empty")
    salt = secrets.token_bytes(16)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_derive(password, salt, _N, _R, _P))}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; False for a malformed stored hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Verified when the username is unknown, so a login takes as long whether or not it exists.
DUMMY_HASH = f"scrypt${_N}${_R}${_P}${_b64(b'0' * 16)}${_b64(b'0' * 32)}"
