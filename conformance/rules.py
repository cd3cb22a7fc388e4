"""The rules the checks cite, as data: one entry per specification section.

FHIR R4 RESTful API (https://hl7.org/fhir/R4/http.html), search
(https://hl7.org/fhir/R4/search.html), operations, SMART App Launch 2.x and US Core 6.1.
"""

from __future__ import annotations

from conformance.model import Rule

_HTTP = "https://hl7.org/fhir/R4/http.html"
_SEARCH = "https://hl7.org/fhir/R4/search.html"
_SMART = "https://hl7.org/fhir/smart-app-launch"
_USCORE = "https://hl7.org/fhir/us/core/STU6.1"


def _http(anchor: str, title: str) -> Rule:
    return Rule("FHIR R4 http", title, f"{_HTTP}#{anchor}")


def _search(anchor: str, title: str) -> Rule:
    return Rule("FHIR R4 search", title, f"{_SEARCH}#{anchor}")


CAPABILITIES = _http("capabilities", "capabilities")
READ = _http("read", "read")
VREAD = _http("vread", "vread")
UPDATE = _http("update", "update")
DELETE = _http("delete", "delete")
CREATE = _http("create", "create")
SEARCH = _http("search", "search")
HISTORY = _http("history", "history")
TRANSACTION = _http("transaction", "batch and transaction")
VERSIONING = _http("concurrency", "managing resource contention (ETag, If-Match)")
MIME = _http("mime-type", "content types and encodings")
ERRORS = Rule("FHIR R4 http", "error responses carry an OperationOutcome", _HTTP)
SECURITY = Rule(
    "FHIR R4 security",
    "security: access without credentials is refused",
    "https://hl7.org/fhir/R4/security.html#http",
)
SEARCH_TYPES = _search("ptypes", "search parameter types")
MODIFIERS = _search("modifiers", "modifiers")
PREFIXES = _search("prefix", "prefixes")
SEARCH_ERRORS = _search("errors", "handling errors")
PAGING = _search("count", "paging and _count")
INCLUDE = _search("include", "_include and _revinclude")
RESULT_PARAMETERS = _search("return", "result parameters: _sort, _summary, _elements")
EVERYTHING = Rule(
    "FHIR R4 operation",
    "Patient/$everything",
    "https://hl7.org/fhir/R4/patient-operation-everything.html",
)
MATCH = Rule(
    "FHIR R4 operation",
    "Patient/$match",
    "https://hl7.org/fhir/R4/patient-operation-match.html",
)
SMART_DISCOVERY = Rule(
    "SMART App Launch 2",
    "discovery: [base]/.well-known/smart-configuration",
    f"{_SMART}/conformance.html#using-well-known",
)
SMART_BACKEND = Rule(
    "SMART App Launch 2",
    "backend services: client_credentials with private_key_jwt",
    f"{_SMART}/backend-services.html#obtain-access-token",
)
US_CORE_SEARCH = Rule(
    "US Core 6.1",
    "required searches (SHALL) per profile's CapabilityStatement entry",
    f"{_USCORE}/CapabilityStatement-us-core-server.html",
)
US_CORE_PROFILE = Rule(
    "US Core 6.1",
    "profiles: mandatory (min 1) elements",
    f"{_USCORE}/profiles-and-extensions.html",
)
US_CORE_SERVER = Rule(
    "US Core 6.1",
    "US Core Server: SHALL support US Core Patient and one more profile; instantiates",
    f"{_USCORE}/CapabilityStatement-us-core-server.html",
)
US_CORE_MUST_SUPPORT = Rule(
    "US Core 6.1",
    "must support: responders SHALL be capable of populating must-support elements",
    f"{_USCORE}/must-support.html",
)
US_CORE_SEARCH_SYNTAX = Rule(
    "US Core 6.1",
    "search: token as code and system|code, reference as id and Type/id",
    f"{_USCORE}/general-requirements.html#search-syntax",
)


def us_core_profile(title: str, page: str) -> Rule:
    """A US Core profile's own page (its mandatory and must-support elements)."""
    return Rule("US Core 6.1", title, page)


def us_core_statement(rtype: str) -> Rule:
    """The US Core Server CapabilityStatement's section for one resource type."""
    return Rule(
        "US Core 6.1",
        f"US Core Server CapabilityStatement: {rtype}",
        f"{_USCORE}/CapabilityStatement-us-core-server.html#{rtype.lower()}",
    )
