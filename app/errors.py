"""One error vocabulary, rendered to an OperationOutcome in one place.

Code below the web layer raises a `FhirError` subclass; `app.main.render_error` (used by the
exception handlers registered in `app.main.create_app`) is the only code that turns one into an HTTP
status and an OperationOutcome (https://hl7.org/fhir/R4/operationoutcome.html).

    FhirError                      500  exception
    ├── Invalid                    400  invalid (or a finer code)
    ├── Unauthenticated            401  login
    ├── Forbidden                  403  forbidden
    ├── NotFound                   404  not-found
    ├── MethodNotAllowed           405  not-supported
    ├── NotAcceptable              406  not-supported
    ├── Conflict                   409  conflict
    ├── Gone                       410  deleted
    ├── PreconditionFailed         412  conflict
    ├── PayloadTooLarge            413  too-costly
    ├── UnsupportedMediaType       415  not-supported
    ├── Unprocessable              422  processing (or invalid, structure, ...)
    └── Unavailable                503  transient
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Conflict",
    "FhirError",
    "Forbidden",
    "Gone",
    "Invalid",
    "Issue",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedMediaType",
    "Unprocessable",
    "operation_outcome",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: severity, code, human text, optional FHIRPath location."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    status = 500
    code = "exception"

    def __init__(
        self,
        diagnostics: str,
        *,
        code: str | None = None,
        issues: Iterable[Issue] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.issue_code = code or self.code
        self.extra_issues = tuple(issues)
        self.headers = headers or {}

    @property
    def issues(self) -> tuple[Issue, ...]:
        if self.extra_issues:
            return self.extra_issues
        return (Issue(code=self.issue_code, diagnostics=self.diagnostics),)

    def outcome(self) -> dict[str, object]:
        return operation_outcome(self.issues)


class Invalid(FhirError):
    status = 400
    code = "invalid"


class Unauthenticated(FhirError):
    status = 401
    code = "login"

    def __init__(self, diagnostics: str, *, error: str = "invalid_token") -> None:
        header = 'Bearer realm="dxf-bridge"'
        if error:
            header += f', error="{error}"'
        super().__init__(diagnostics, headers={"WWW-Authenticate": header})


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    code = "processing"


class Unavailable(FhirError):
    status = 503
    code = "transient"


def operation_outcome(issues: Iterable[Issue]) -> dict[str, object]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_json() for i in issues]}
