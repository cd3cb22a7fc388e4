"""OAuth 2.0 error responses (RFC 6749 section 5.2, RFC 7009, RFC 7662).

The authorization server's endpoints answer `{"error": ..., "error_description": ...}` JSON, not
OperationOutcome: OAuth clients expect this shape. Only `app/auth/web.py` renders them.
"""

from __future__ import annotations

__all__ = ["OAuthError"]


class OAuthError(Exception):
    """`error` is an RFC 6749 code: invalid_request, invalid_client, invalid_grant,
    unauthorized_client, unsupported_grant_type, invalid_scope, access_denied, ..."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
